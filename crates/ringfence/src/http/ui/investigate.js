// The investigate page (being built this session; see issue 6).
"use strict";

RF.page("investigate", {
  title: "Investigate",
  mount(root) {
    root.append(RF.el("p", { class: "muted" }, "This page is being built."));
  },
});
