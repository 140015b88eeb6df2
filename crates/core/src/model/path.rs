//! Attributions by the decision path (Saabas 2014; XGBoost's `approx_contribs`): the cheap
//! per-decision explanation, next to exact TreeSHAP in `shap.rs`.
//!
//! Every node already carries the cover-weighted mean of its subtree's leaves (its expected
//! value, see `tree.rs`). Walking the path `x` takes, each split moves the expectation from
//! `E[node]` to `E[child]`, and that step is credited to the feature split on. The steps of a
//! tree add up to its leaf minus its root's expectation, so the attributions plus the bias
//! (base margin plus every root's expectation) are the margin, as with TreeSHAP.
//!
//! Why not always TreeSHAP: it visits every leaf of every tree and costs about a millisecond
//! for 300 trees of depth 6, while this visits the nodes scoring visits. The price is
//! consistency: a feature split on near the root tends to be credited more than its Shapley
//! value. For a tree of depth 1 the two agree exactly.

use super::tree::{Forest, LANES};
use crate::features::NUM_COUNT;

impl Forest {
    /// Adds every tree's path attributions for `num` into `out` (one slot per model feature).
    ///
    /// Walks [`LANES`] trees side by side for a fixed number of steps, as [`Forest::sum`]
    /// does: a leaf steps to itself, and crediting that step adds `E[leaf] - E[leaf] = 0` to
    /// `out[0]` (a leaf's feature slot), so no lane needs to ask whether it has arrived.
    /// `out[0]` exists whenever a step is taken: a tree with a split means a model feature.
    #[inline]
    pub(super) fn path_contributions(&self, num: &[f64; NUM_COUNT], out: &mut [f64]) {
        let roots = self.roots.chunks_exact(LANES);
        let rest = roots.remainder();
        for (roots, depths) in roots.zip(self.depths.chunks_exact(LANES)) {
            let mut at: [usize; LANES] = std::array::from_fn(|lane| roots[lane] as usize);
            let steps = depths.iter().copied().max().unwrap_or(0);
            for _ in 0..steps {
                for a in &mut at {
                    *a = self.credit_step(*a, num, out);
                }
            }
        }
        let done = self.roots.len() - rest.len();
        for (&root, &depth) in rest.iter().zip(&self.depths[done..]) {
            let mut at = root as usize;
            for _ in 0..depth {
                at = self.credit_step(at, num, out);
            }
        }
    }

    /// Steps from node `at` to the child `num` takes, crediting the change in expected value
    /// to the feature split on; returns the child.
    #[inline(always)]
    fn credit_step(&self, at: usize, num: &[f64; NUM_COUNT], out: &mut [f64]) -> usize {
        let node = self.nodes[at];
        let next = node.next(at, num[node.num()]);
        out[self.split_feature[at] as usize] += self.values[next] - self.values[at];
        next
    }
}
