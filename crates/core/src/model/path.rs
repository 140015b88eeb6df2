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

use super::tree::Forest;
use crate::features::NUM_COUNT;

impl Forest {
    /// Adds every tree's path attributions for `num` into `out` (one slot per model feature).
    ///
    /// Uses the same walk as scoring ([`Forest::walk`]): a leaf steps to itself, and crediting
    /// that step adds `E[leaf] - E[leaf] = 0` to `out[0]` (a leaf's feature slot). `out[0]`
    /// exists whenever a step is taken: a tree with a split means a model feature.
    #[inline]
    pub(super) fn path_contributions(&self, num: &[f64; NUM_COUNT], out: &mut [f64]) {
        self.walk(|at| self.credit_step(at, num, out), |_| {});
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
