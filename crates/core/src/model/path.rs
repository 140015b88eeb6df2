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
    /// The sum of the leaves `num` reaches (exactly [`Forest::sum`]: same walk, same order)
    /// and, in the same walk, every tree's path attributions added into `by_num`, which is
    /// indexed like `num` (by catalog feature, not model feature).
    ///
    /// One walk instead of two: the attributions need the expected value of each node the
    /// walk visits, and that value sits in the node the step loads anyway (see `tree::Node`),
    /// so explaining costs a subtraction and an add per step, not a second pass over the
    /// trees. A leaf steps to itself and credits `E[leaf] - E[leaf] = +0.0` to `by_num[0]`,
    /// which changes nothing (a sum that starts at `+0.0` never becomes `-0.0`).
    #[inline]
    pub(super) fn sum_with_path(
        &self,
        num: &[f64; NUM_COUNT],
        by_num: &mut [f64; NUM_COUNT],
    ) -> f64 {
        let mut sum = 0.0;
        self.walk(
            |at| {
                let node = self.nodes[at];
                let next = node.next(at, num[node.num()]);
                by_num[node.num()] += self.nodes[next].value - node.value;
                next
            },
            |leaf| sum += self.nodes[leaf].value,
        );
        sum
    }
}
