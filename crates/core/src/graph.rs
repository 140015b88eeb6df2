//! The link graph of users, cards and devices: two of them are linked when they appear in the
//! same transaction. Connected components are fraud-ring candidates.
//!
//! Incremental union-find (union by size, path halving on writes) keeps, per component, its
//! size, its number of users and its number of members carrying a confirmed-fraud label.
//! Reads use a non-compressing `find` so scoring can read the graph through `&self`.
//!
//! Components only grow: union-find cannot split them, so a node cannot leave its component
//! while the component lives. A component is forgotten as a whole once none of its members has
//! been linked (or labelled) for the state's idle time to live ([`LinkGraph::expire`], called by
//! the same event-time sweep that forgets idle entities): ring sizes stay exact for every live
//! ring, and memory is bounded by the users, cards and devices of rings active within the time
//! to live, not by every id ever seen.

use serde::{Deserialize, Serialize};

/// A node to link or look up: its 64-bit key and whether it is a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRef {
    /// Entity key (kind-tagged hash of the id).
    pub key: u64,
    /// Whether the node is a user (counted in [`Component::users`]).
    pub is_user: bool,
}

/// Summary of one connected component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Component {
    /// Users, cards and devices in it.
    pub size: u32,
    /// Users in it.
    pub users: u32,
    /// Members carrying a confirmed-fraud label.
    pub fraud_members: u32,
}

/// The union-find forest.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LinkGraph {
    #[serde(with = "crate::snapshot::sorted_map")]
    index: crate::state::KeyMap<u32>,
    parent: Vec<u32>,
    comp: Vec<Component>,
    /// Confirmed-fraud labels on each node (a node is flagged while this is above zero).
    fraud_labels: Vec<u32>,
    /// Newest event time (ms) at which a member was linked or labelled; meaningful at roots.
    last_ms: Vec<i64>,
}

impl LinkGraph {
    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Whether the graph has no node.
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    fn find_ro(&self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            x = self.parent[x as usize];
        }
        x
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    fn node(&mut self, n: NodeRef, at_ms: i64) -> u32 {
        if let Some(&i) = self.index.get(&n.key) {
            return i;
        }
        let i = self.parent.len() as u32;
        self.parent.push(i);
        self.comp.push(Component {
            size: 1,
            users: u32::from(n.is_user),
            fraud_members: 0,
        });
        self.fraud_labels.push(0);
        self.last_ms.push(at_ms);
        self.index.insert(n.key, i);
        i
    }

    /// The component of a node, if the node exists.
    pub fn component_of(&self, key: u64) -> Option<Component> {
        let i = *self.index.get(&key)?;
        Some(self.comp[self.find_ro(i) as usize])
    }

    /// The component that linking `nodes` would form, without linking them: the union of
    /// their current components plus any node not seen yet.
    pub fn preview(&self, nodes: &[NodeRef]) -> Component {
        let mut roots: [u32; 8] = [u32::MAX; 8];
        let mut n_roots = 0;
        let mut out = Component::default();
        for n in nodes.iter().take(8) {
            match self.index.get(&n.key) {
                None => {
                    out.size += 1;
                    out.users += u32::from(n.is_user);
                }
                Some(&i) => {
                    let r = self.find_ro(i);
                    if !roots[..n_roots].contains(&r) {
                        roots[n_roots] = r;
                        n_roots += 1;
                        let c = self.comp[r as usize];
                        out.size += c.size;
                        out.users += c.users;
                        out.fraud_members += c.fraud_members;
                    }
                }
            }
        }
        out
    }

    /// Links all `nodes` into one component, active at `at_ms` (event time).
    pub fn link(&mut self, nodes: &[NodeRef], at_ms: i64) {
        let mut first: Option<u32> = None;
        for n in nodes {
            let i = self.node(*n, at_ms);
            match first {
                None => first = Some(i),
                Some(f) => self.union(f, i),
            }
        }
        if let Some(f) = first {
            let root = self.find(f) as usize;
            self.last_ms[root] = self.last_ms[root].max(at_ms);
        }
    }

    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        let (big, small) = if self.comp[ra as usize].size >= self.comp[rb as usize].size {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.parent[small as usize] = big;
        let s = self.comp[small as usize];
        let c = &mut self.comp[big as usize];
        c.size += s.size;
        c.users += s.users;
        c.fraud_members += s.fraud_members;
        self.last_ms[big as usize] = self.last_ms[big as usize].max(self.last_ms[small as usize]);
    }

    /// Adds (`fraud = true`) or withdraws one confirmed-fraud label on a node. Withdrawing
    /// more labels than were added is ignored. Unknown nodes are created (as of `at_ms`, the
    /// labelled transaction's time) so a label that arrives before the node's first link is
    /// kept. A label does not make a component active: it describes a past transaction.
    pub fn label(&mut self, n: NodeRef, fraud: bool, at_ms: i64) {
        let i = self.node(n, at_ms);
        let before = self.fraud_labels[i as usize];
        let after = if fraud {
            before.saturating_add(1)
        } else {
            before.saturating_sub(1)
        };
        self.fraud_labels[i as usize] = after;
        let root = self.find(i) as usize;
        match (before > 0, after > 0) {
            (false, true) => self.comp[root].fraud_members += 1,
            (true, false) => self.comp[root].fraud_members -= 1,
            _ => {}
        }
    }

    /// Forgets every component whose newest activity is before `cutoff_ms` (all its nodes, with
    /// their labels); returns how many nodes went. Survivors keep their order and their
    /// components, so the result depends only on the graph and the cutoff (deterministic).
    pub fn expire(&mut self, cutoff_ms: i64) -> usize {
        let n = self.parent.len();
        let mut renumber = vec![u32::MAX; n];
        let mut kept = 0u32;
        for (i, slot) in renumber.iter_mut().enumerate() {
            if self.last_ms[self.find_ro(i as u32) as usize] >= cutoff_ms {
                *slot = kept;
                kept += 1;
            }
        }
        if kept as usize == n {
            return 0;
        }
        // Compact in place: a survivor moves down (or stays), never up, so each slot is read
        // before it is overwritten. A parent is in its child's component, so it survives too.
        for i in 0..n {
            let j = renumber[i];
            if j == u32::MAX {
                continue;
            }
            let j = j as usize;
            self.parent[j] = renumber[self.parent[i] as usize];
            self.comp[j] = self.comp[i];
            self.fraud_labels[j] = self.fraud_labels[i];
            self.last_ms[j] = self.last_ms[i];
        }
        let kept = kept as usize;
        self.parent.truncate(kept);
        self.comp.truncate(kept);
        self.fraud_labels.truncate(kept);
        self.last_ms.truncate(kept);
        self.index.retain(|_, i| match renumber[*i as usize] {
            u32::MAX => false,
            j => {
                *i = j;
                true
            }
        });
        n - kept
    }

    /// Checks what `find` and the indexing rely on, for a graph that came from outside (a
    /// snapshot): every index and parent points at a node, the per-node vectors have one entry
    /// per node, and every parent chain reaches a root. Union by size keeps trees at most
    /// log2(nodes) deep, so a chain longer than 64 can only be a cycle.
    pub(crate) fn check_consistency(&self) -> Result<(), String> {
        let n = self.parent.len();
        if self.comp.len() != n
            || self.fraud_labels.len() != n
            || self.last_ms.len() != n
            || self.index.len() != n
        {
            return Err(format!(
                "link graph has {n} parents but {} components, {} label counts, {} activity times and {} keys",
                self.comp.len(),
                self.fraud_labels.len(),
                self.last_ms.len(),
                self.index.len()
            ));
        }
        if self.index.values().any(|&i| i as usize >= n) {
            return Err("link graph key points past the last node".into());
        }
        for start in 0..n {
            let mut x = start;
            let mut steps = 0;
            loop {
                let p = self.parent[x] as usize;
                if p >= n {
                    return Err(format!("link graph node {x} has parent {p} of {n}"));
                }
                if p == x {
                    break;
                }
                steps += 1;
                if steps > 64 {
                    return Err(format!("link graph node {start} is on a parent cycle"));
                }
                x = p;
            }
        }
        Ok(())
    }

    /// Whether a node carries a confirmed-fraud label.
    pub fn is_flagged(&self, key: u64) -> bool {
        self.index
            .get(&key)
            .is_some_and(|&i| self.fraud_labels[i as usize] > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(k: u64) -> NodeRef {
        NodeRef {
            key: k,
            is_user: true,
        }
    }
    fn d(k: u64) -> NodeRef {
        NodeRef {
            key: k,
            is_user: false,
        }
    }

    #[test]
    fn links_merge_components_with_sizes_and_users() {
        let mut g = LinkGraph::default();
        g.link(&[u(1), d(100), d(200)], 0);
        g.link(&[u(2), d(300)], 0);
        assert_eq!(g.component_of(1).unwrap().size, 3);
        assert_eq!(g.component_of(2).unwrap().size, 2);
        g.link(&[u(2), d(100)], 0); // user 2 uses user 1's device
        let c = g.component_of(300).unwrap();
        assert_eq!((c.size, c.users), (5, 2));
        assert_eq!(g.len(), 5);
    }

    #[test]
    fn preview_does_not_change_the_graph() {
        let mut g = LinkGraph::default();
        g.link(&[u(1), d(100)], 0);
        let p = g.preview(&[u(2), d(100)]);
        assert_eq!((p.size, p.users), (3, 2));
        assert_eq!(g.component_of(1).unwrap().size, 2);
        assert!(g.component_of(2).is_none());
        let same = g.preview(&[u(1), d(100)]);
        assert_eq!(same.size, 2, "two nodes of one component count once");
    }

    #[test]
    fn fraud_labels_propagate_through_unions_and_can_be_withdrawn() {
        let mut g = LinkGraph::default();
        g.link(&[u(1), d(100)], 0);
        g.label(u(1), true, 0);
        assert_eq!(g.component_of(100).unwrap().fraud_members, 1);
        g.link(&[u(2), d(200)], 0);
        assert_eq!(g.preview(&[u(2), d(100)]).fraud_members, 1);
        g.link(&[u(2), d(100)], 0);
        assert_eq!(g.component_of(200).unwrap().fraud_members, 1);
        g.label(u(1), true, 0);
        g.label(u(1), false, 0);
        assert!(
            g.is_flagged(1),
            "one of two labels withdrawn: still flagged"
        );
        g.label(u(1), false, 0);
        assert!(!g.is_flagged(1));
        assert_eq!(g.component_of(200).unwrap().fraud_members, 0);
        g.label(u(1), false, 0);
        assert_eq!(
            g.component_of(200).unwrap().fraud_members,
            0,
            "no underflow"
        );
    }

    #[test]
    fn consistency_check_accepts_real_graphs_and_catches_broken_ones() {
        let mut g = LinkGraph::default();
        for i in 0..1000u64 {
            g.link(&[u(i), d(1_000_000 + i / 3)], 0);
        }
        assert_eq!(g.check_consistency(), Ok(()));
        let mut out_of_range = g.clone();
        out_of_range.parent[5] = 5000;
        assert!(out_of_range.check_consistency().is_err());
        let mut cycle = g.clone();
        let (a, b) = (cycle.index[&0], cycle.index[&1_000_000]);
        cycle.parent[a as usize] = b;
        cycle.parent[b as usize] = a;
        assert!(cycle.check_consistency().unwrap_err().contains("cycle"));
        let mut short = g;
        short.fraud_labels.pop();
        assert!(short.check_consistency().is_err());
    }

    #[test]
    fn idle_rings_expire_whole_and_active_ones_stay() {
        let mut g = LinkGraph::default();
        g.link(&[u(1), d(100)], 1_000);
        g.link(&[u(2), d(200)], 1_000);
        g.label(u(2), true, 1_000);
        g.link(&[u(3), d(300)], 1_000);
        // Ring 3 is joined by an active user: the whole ring lives on.
        g.link(&[u(4), d(300)], 9_000);
        // Ring 1 is touched again late; ring 2 is not.
        g.link(&[u(1), d(101)], 8_000);
        assert_eq!(g.expire(5_000), 2, "only ring 2 (u2, d200) is idle");
        assert_eq!(g.len(), 6);
        assert!(g.component_of(2).is_none() && g.component_of(200).is_none());
        assert!(!g.is_flagged(2), "its label went with it");
        let c = g.component_of(3).expect("ring 3 lives");
        assert_eq!((c.size, c.users), (3, 2));
        assert_eq!(g.component_of(101).expect("ring 1 lives").size, 3);
        assert_eq!(g.check_consistency(), Ok(()));
        // The survivors still link and merge as before.
        g.link(&[u(1), d(300)], 10_000);
        assert_eq!(g.component_of(4).expect("merged").size, 6);
        assert_eq!(g.expire(5_000), 0);
        assert_eq!(g.expire(20_000), 6, "everything is idle by then");
        assert!(g.is_empty());
    }

    #[test]
    fn long_chains_stay_correct() {
        let mut g = LinkGraph::default();
        for i in 0..10_000u64 {
            g.link(&[u(i), d(1_000_000 + i)], 0);
            if i > 0 {
                g.link(&[u(i), d(1_000_000 + i - 1)], 0);
            }
        }
        let c = g.component_of(0).unwrap();
        assert_eq!((c.size, c.users), (20_000, 10_000));
    }
}
