// The live page (being built this session; see issue 6).
"use strict";

RF.page("live", {
  title: "Live",
  mount(root) {
    root.append(RF.el("p", { class: "muted" }, "This page is being built."));
  },
});
