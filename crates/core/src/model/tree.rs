//! The flat tree ensemble scoring walks: every tree's nodes in one array, in preorder, built
//! from [`TreeSpec`]s after checking that each is a finite, acyclic binary tree.

use super::{ModelError, NodeSpec, TreeSpec, MAX_DEPTH, MAX_TREES};
use crate::features::NUM_COUNT;

// Node stores catalog and model feature indices as u16 (a model has at most NUM_COUNT features).
const _: () = assert!(NUM_COUNT <= u16::MAX as usize);

const LEAF: u8 = 1;
/// Trees walked side by side in [`Forest::sum`] and in path attributions.
pub(super) const LANES: usize = 8;
const DEFAULT_LEFT: u8 = 2;

/// The f64 boundary `m` such that `x < m` exactly when `(x as f32) < t`: XGBoost's
/// single-precision split rule as one double-precision comparison. Rounding to f32 is
/// monotonic, so the values that round below `t` are those under the midpoint between `t` and
/// the next f32 down; a value exactly on that midpoint rounds to whichever of the two is even.
pub(crate) fn f32_split_boundary(t: f32) -> f64 {
    let below = t.next_down();
    if below == f32::NEG_INFINITY {
        // `t` is the lowest finite f32: only values that round to -inf are below it.
        return f64::from(t) - 2f64.powi(103);
    }
    let mid = (f64::from(below) + f64::from(t)) / 2.0; // exact: f64 has 29 more bits
    if below.to_bits() & 1 == 0 {
        // The midpoint rounds down to `below` (even), so it belongs on the left.
        mid.next_up()
    } else {
        mid
    }
}

/// One node as scoring reads it: 24 bytes, everything a walk needs in one place.
///
/// Nodes are in preorder, so a split's left child is always the next node and only the right
/// child needs an index. A leaf steps to itself (its threshold is NaN and its right child is
/// itself), so scoring can take a fixed number of steps per tree without asking whether it has
/// arrived.
///
/// The value sits in the node (not in a parallel array, as it did until issue 7) because the
/// walk ends on the leaf's cache line anyway: a separate array cost one more cache miss per
/// tree, and path attributions read the expected value of every node the walk visits.
#[derive(Clone, Copy, Debug)]
pub(super) struct Node {
    /// Go left iff `x < threshold`. Models with XGBoost's single-precision rule store the
    /// boundary from [`f32_split_boundary`], which makes this comparison exact for them too.
    threshold: f64,
    /// A leaf's value; for a split, the cover-weighted mean of its subtree's leaves (the
    /// expected value TreeSHAP and path attributions start from).
    pub(super) value: f64,
    /// Index into `FeatureValues::num` of the feature split on.
    num: u16,
    /// `LEAF` and `DEFAULT_LEFT` bits.
    flags: u8,
    /// Index into [`Forest::nodes`] of the right child.
    right: u32,
}

impl Node {
    #[inline]
    pub(super) fn is_leaf(&self) -> bool {
        self.flags & LEAF != 0
    }

    #[inline]
    fn default_left(&self) -> bool {
        self.flags & DEFAULT_LEFT != 0
    }

    /// Catalog index of the feature this split reads.
    #[inline]
    pub(super) fn num(&self) -> usize {
        self.num as usize
    }

    /// Index of the right child.
    #[inline]
    pub(super) fn right(&self) -> usize {
        self.right as usize
    }

    /// The child that `x` goes to from this split, stored at index `at` (a leaf: `at` itself).
    #[inline]
    pub(super) fn next(&self, at: usize, x: f64) -> usize {
        // Written without branches (a NaN compares false) so it compiles to a select: which
        // way a row goes is data, and mispredicted jumps would dominate the walk.
        let left = (x < self.threshold) | (x.is_nan() & self.default_left());
        if left {
            at + 1
        } else {
            self.right as usize
        }
    }
}

/// All trees of a model, flattened. Parallel arrays are indexed like `nodes`.
#[derive(Clone, Debug, Default)]
pub(super) struct Forest {
    pub(super) nodes: Vec<Node>,
    /// Training weight that reached each node.
    pub(super) covers: Vec<f64>,
    /// Model feature index (into the feature names) of each split; 0 for leaves.
    pub(super) split_feature: Vec<u16>,
    /// Index of each tree's root in `nodes`.
    pub(super) roots: Vec<u32>,
    /// Each tree's deepest leaf, in splits below its root: the steps a walk takes.
    pub(super) depths: Vec<u8>,
    /// The largest of `depths`.
    pub(super) max_depth: usize,
}

/// A node waiting to be laid out while flattening one tree.
struct Pending {
    /// Index in the input tree.
    spec: usize,
    depth: usize,
    /// Flat index of the parent whose right child this is (left children need no patching).
    right_of: Option<usize>,
}

impl Forest {
    /// Validates and flattens `trees`; `num_index[i]` is the catalog index of model feature `i`.
    pub(super) fn build(trees: &[TreeSpec], num_index: &[u16]) -> Result<Forest, ModelError> {
        if trees.len() > MAX_TREES {
            return Err(ModelError::Invalid(format!(
                "{} trees; at most {MAX_TREES} are allowed",
                trees.len()
            )));
        }
        let mut forest = Forest::default();
        let mut seen = Vec::new();
        let mut stack = Vec::new();
        for (t, tree) in trees.iter().enumerate() {
            forest.push_tree(t, tree, num_index, &mut seen, &mut stack)?;
        }
        Ok(forest)
    }

    /// Lays one tree out in preorder from its root, checking every node it reaches.
    ///
    /// Walking from the root with a `seen` mark per node rejects cycles and shared subtrees
    /// without trusting the input's numbering; preorder then guarantees that children follow
    /// their parent, which the expected-value pass and the scoring walk rely on.
    fn push_tree(
        &mut self,
        t: usize,
        tree: &TreeSpec,
        num_index: &[u16],
        seen: &mut Vec<bool>,
        stack: &mut Vec<Pending>,
    ) -> Result<(), ModelError> {
        let specs = &tree.nodes;
        let bad = |node: usize, reason: String| ModelError::InvalidTree {
            tree: t,
            node,
            reason,
        };
        if specs.is_empty() {
            return Err(bad(0, "the tree has no nodes".to_owned()));
        }
        let root = self.nodes.len();
        if root.saturating_add(specs.len()) > u32::MAX as usize {
            return Err(ModelError::Invalid(format!(
                "more than {} nodes in all",
                u32::MAX
            )));
        }
        self.roots.push(root as u32);
        let mut depth = 0;
        seen.clear();
        seen.resize(specs.len(), false);
        seen[0] = true;
        stack.clear();
        stack.push(Pending {
            spec: 0,
            depth: 0,
            right_of: None,
        });

        while let Some(p) = stack.pop() {
            let at = self.nodes.len();
            if let Some(parent) = p.right_of {
                self.nodes[parent].right = at as u32;
            }
            depth = depth.max(p.depth);
            match specs[p.spec] {
                NodeSpec::Leaf { value, cover } => {
                    if !value.is_finite() {
                        return Err(bad(p.spec, format!("leaf value {value} is not finite")));
                    }
                    if !(cover.is_finite() && cover >= 0.0) {
                        return Err(bad(
                            p.spec,
                            format!("cover {cover} is not a finite non-negative number"),
                        ));
                    }
                    self.nodes.push(Node {
                        threshold: f64::NAN,
                        value,
                        num: 0,
                        flags: LEAF,
                        right: at as u32,
                    });
                    self.covers.push(cover);
                    self.split_feature.push(0);
                }
                NodeSpec::Split {
                    feature,
                    threshold,
                    left,
                    right,
                    default_left,
                    cover,
                } => {
                    if p.depth >= MAX_DEPTH {
                        return Err(bad(
                            p.spec,
                            format!("the tree is deeper than {MAX_DEPTH} levels"),
                        ));
                    }
                    let Some(&num) = num_index.get(feature) else {
                        return Err(bad(
                            p.spec,
                            format!(
                                "split feature {feature} is out of range (the model has {} features)",
                                num_index.len()
                            ),
                        ));
                    };
                    if !threshold.is_finite() {
                        return Err(bad(p.spec, format!("threshold {threshold} is not finite")));
                    }
                    if !(cover.is_finite() && cover > 0.0) {
                        return Err(bad(
                            p.spec,
                            format!(
                                "cover {cover} of a split must be a finite positive number (TreeSHAP divides by it)"
                            ),
                        ));
                    }
                    for (side, child) in [("left", left), ("right", right)] {
                        if child >= specs.len() {
                            return Err(bad(
                                p.spec,
                                format!(
                                    "{side} child {child} is out of range (the tree has {} nodes)",
                                    specs.len()
                                ),
                            ));
                        }
                        if seen[child] {
                            return Err(bad(
                                p.spec,
                                format!(
                                    "{side} child {child} is reached twice (a cycle or a shared subtree)"
                                ),
                            ));
                        }
                        seen[child] = true;
                    }
                    self.nodes.push(Node {
                        threshold,
                        value: 0.0, // the expected value, filled in below
                        num,
                        flags: if default_left { DEFAULT_LEFT } else { 0 },
                        right: 0, // patched when the right child is laid out
                    });
                    self.covers.push(cover);
                    self.split_feature.push(feature as u16);
                    // Left on top, so it is laid out next: at `at + 1`.
                    stack.push(Pending {
                        spec: right,
                        depth: p.depth + 1,
                        right_of: Some(at),
                    });
                    stack.push(Pending {
                        spec: left,
                        depth: p.depth + 1,
                        right_of: None,
                    });
                }
            }
        }

        self.depths.push(depth as u8); // at most MAX_DEPTH
        self.max_depth = self.max_depth.max(depth);

        // Expected values bottom-up: in preorder every child comes after its parent. Dividing
        // by the node's own cover (not the children's sum) is what XGBoost does, and it keeps
        // TreeSHAP exactly additive whatever the covers are.
        for i in (root..self.nodes.len()).rev() {
            let node = self.nodes[i];
            if !node.is_leaf() {
                let (l, r) = (i + 1, node.right as usize);
                self.nodes[i].value = (self.nodes[l].value * self.covers[l]
                    + self.nodes[r].value * self.covers[r])
                    / self.covers[i];
            }
        }
        Ok(())
    }

    /// Number of trees.
    pub(super) fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// Sum over trees of their cover-weighted mean leaf value.
    pub(super) fn expected_value(&self) -> f64 {
        self.roots
            .iter()
            .map(|&r| self.nodes[r as usize].value)
            .sum()
    }

    /// Sum over trees of the leaf `num` reaches.
    #[inline]
    pub(super) fn sum(&self, num: &[f64; NUM_COUNT]) -> f64 {
        let mut sum = 0.0;
        self.walk(
            |at| {
                let node = self.nodes[at];
                node.next(at, num[node.num as usize])
            },
            |leaf| sum += self.nodes[leaf].value,
        );
        sum
    }

    /// Walks every tree from its root with `step` (which returns the next node) and hands
    /// each tree's final node to `at_leaf`, in tree order.
    ///
    /// Walks [`LANES`] trees at once for as many steps as the deepest of them: each step is a
    /// chain of dependent loads, and interleaving independent chains lets the CPU overlap
    /// their latency. A leaf steps to itself, so no lane needs to ask whether it has arrived.
    #[inline(always)]
    pub(super) fn walk(
        &self,
        mut step: impl FnMut(usize) -> usize,
        mut at_leaf: impl FnMut(usize),
    ) {
        let roots = self.roots.chunks_exact(LANES);
        let rest = roots.remainder();
        for (roots, depths) in roots.zip(self.depths.chunks_exact(LANES)) {
            let mut at: [usize; LANES] = std::array::from_fn(|lane| roots[lane] as usize);
            let steps = depths.iter().copied().max().unwrap_or(0);
            for _ in 0..steps {
                for a in &mut at {
                    *a = step(*a);
                }
            }
            for a in at {
                at_leaf(a);
            }
        }
        let done = self.roots.len() - rest.len();
        for (&root, &depth) in rest.iter().zip(&self.depths[done..]) {
            let mut at = root as usize;
            for _ in 0..depth {
                at = step(at);
            }
            at_leaf(at);
        }
    }

    /// The trees back as specs, renumbered in preorder (for writing them out).
    pub(super) fn tree_specs(&self) -> Vec<TreeSpec> {
        let ends = self
            .roots
            .iter()
            .skip(1)
            .map(|&r| r as usize)
            .chain([self.nodes.len()]);
        self.roots
            .iter()
            .zip(ends)
            .map(|(&root, end)| {
                let root = root as usize;
                let nodes = (root..end)
                    .map(|i| {
                        let node = self.nodes[i];
                        if node.is_leaf() {
                            NodeSpec::Leaf {
                                value: node.value,
                                cover: self.covers[i],
                            }
                        } else {
                            NodeSpec::Split {
                                feature: self.split_feature[i] as usize,
                                threshold: node.threshold,
                                left: i + 1 - root,
                                right: node.right as usize - root,
                                default_left: node.default_left(),
                                cover: self.covers[i],
                            }
                        }
                    })
                    .collect();
                TreeSpec { nodes }
            })
            .collect()
    }
}
