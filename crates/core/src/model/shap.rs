//! Exact path-dependent TreeSHAP (Lundberg, Erion & Lee 2018, "Consistent Individualized
//! Feature Attribution for Tree Ensembles", Algorithm 2), over the flat [`Forest`].
//!
//! It follows XGBoost's `RegTree::TreeShap` step for step (same path bookkeeping, same use of
//! node covers), in `f64` where XGBoost uses `f32`, so `pred_contribs` agree to float32
//! rounding. The one addition: a branch that neither `x` follows nor any training weight
//! reached (both path fractions zero) is skipped; its contribution is exactly zero, and
//! walking it would divide zero by zero.

use super::tree::Forest;
use super::MAX_DEPTH;
use crate::features::NUM_COUNT;

/// Feature index of the path's dummy first element.
const NO_FEATURE: usize = usize::MAX;

/// One feature on the current root-to-node path, with the fractions of the paths that pass it.
#[derive(Clone, Copy, Debug, Default)]
struct PathElement {
    /// Model feature index, or [`NO_FEATURE`].
    feature: usize,
    /// Fraction of training weight that follows this path when the feature is unknown.
    zero_fraction: f64,
    /// 1 if `x` follows this path (the feature is known), else 0.
    one_fraction: f64,
    /// Weight of the subsets of each size, as the algorithm's permutation counting needs.
    pweight: f64,
}

impl Forest {
    /// Adds every tree's SHAP values for `num` into `phi` (one slot per model feature).
    pub(super) fn contributions(&self, num: &[f64; NUM_COUNT], phi: &mut [f64]) {
        // Each level of the recursion keeps its own copy of the path, one element longer than
        // its parent's: triangular storage, as XGBoost sizes it.
        let levels = self.max_depth + 2;
        let mut walk = Walk {
            forest: self,
            num,
            phi,
            path: vec![PathElement::default(); levels * (levels + 1) / 2],
        };
        let root_edge = PathElement {
            feature: NO_FEATURE,
            zero_fraction: 1.0,
            one_fraction: 1.0,
            pweight: 0.0,
        };
        for &root in &self.roots {
            walk.recurse(root as usize, 0, 0, root_edge);
        }
    }
}

/// One `x` being explained against one forest.
struct Walk<'a> {
    forest: &'a Forest,
    num: &'a [f64; NUM_COUNT],
    phi: &'a mut [f64],
    /// The paths of every recursion level, one after the other.
    path: Vec<PathElement>,
}

impl Walk<'_> {
    /// Algorithm 2's RECURSE: extends the path with `edge` (the feature and fractions of the
    /// split that led to `at`), then either credits a leaf's value to the features on the path
    /// or descends both children.
    ///
    /// `path[parent_start..]` holds the parent's path of `depth` elements after a dummy; this
    /// call copies it to just past its end and works on the copy.
    fn recurse(&mut self, at: usize, parent_start: usize, depth: usize, edge: PathElement) {
        let forest = self.forest;
        let start = parent_start + depth + 1;
        self.path
            .copy_within(parent_start..parent_start + depth + 1, start);
        let here = &mut self.path[start..start + depth + 1];
        extend(
            here,
            depth,
            edge.zero_fraction,
            edge.one_fraction,
            edge.feature,
        );

        let node = forest.nodes[at];
        if node.is_leaf() {
            let value = node.value;
            for i in 1..=depth {
                let w = unwound_sum(here, depth, i);
                let el = here[i];
                self.phi[el.feature] += w * (el.one_fraction - el.zero_fraction) * value;
            }
            return;
        }

        let hot = node.next(at, self.num[node.num()]);
        let cold = if hot == at + 1 { node.right() } else { at + 1 };
        let cover = forest.covers[at];
        let hot_zero = forest.covers[hot] / cover;
        let cold_zero = forest.covers[cold] / cover;
        let feature = forest.split_feature[at] as usize;

        // A feature split on again higher up: undo that edge and redo it here, so each
        // feature appears on the path once with the product of its fractions.
        let mut incoming_zero = 1.0;
        let mut incoming_one = 1.0;
        let mut depth = depth;
        if let Some(k) = here.iter().position(|el| el.feature == feature) {
            incoming_zero = here[k].zero_fraction;
            incoming_one = here[k].one_fraction;
            unwind(here, depth, k);
            depth -= 1;
        }

        for (child, zero_fraction, one_fraction) in [
            (hot, hot_zero * incoming_zero, incoming_one),
            (cold, cold_zero * incoming_zero, 0.0),
        ] {
            if zero_fraction != 0.0 || one_fraction != 0.0 {
                let edge = PathElement {
                    feature,
                    zero_fraction,
                    one_fraction,
                    pweight: 0.0,
                };
                self.recurse(child, start, depth + 1, edge);
            }
        }
    }
}

/// `RECIP[k] = 1 / k`: the algorithm divides by small integers in its inner loops, and a
/// multiplication is several times cheaper than a division.
const RECIP: [f64; MAX_DEPTH + 3] = {
    let mut r = [0.0; MAX_DEPTH + 3];
    let mut k = 1;
    while k < r.len() {
        r[k] = 1.0 / k as f64;
        k += 1;
    }
    r
};

/// Algorithm 2's EXTEND: adds a feature with its fractions at position `depth`.
fn extend(
    path: &mut [PathElement],
    depth: usize,
    zero_fraction: f64,
    one_fraction: f64,
    feature: usize,
) {
    path[depth] = PathElement {
        feature,
        zero_fraction,
        one_fraction,
        pweight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let inv_n = RECIP[depth + 1];
    for i in (0..depth).rev() {
        path[i + 1].pweight += one_fraction * path[i].pweight * (i + 1) as f64 * inv_n;
        path[i].pweight = zero_fraction * path[i].pweight * (depth - i) as f64 * inv_n;
    }
}

/// Algorithm 2's UNWIND: removes the feature at `k` from a path of `depth` (+1) elements.
fn unwind(path: &mut [PathElement], depth: usize, k: usize) {
    let one = path[k].one_fraction;
    let zero = path[k].zero_fraction;
    let n = (depth + 1) as f64;
    let inv_n = RECIP[depth + 1];
    if one != 0.0 {
        let scale = n / one;
        let mut next_one_portion = path[depth].pweight;
        for i in (0..depth).rev() {
            let tmp = path[i].pweight;
            path[i].pweight = next_one_portion * scale * RECIP[i + 1];
            next_one_portion = tmp - path[i].pweight * zero * (depth - i) as f64 * inv_n;
        }
    } else {
        let scale = n / zero;
        for i in (0..depth).rev() {
            path[i].pweight *= scale * RECIP[depth - i];
        }
    }
    for i in k..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero_fraction = path[i + 1].zero_fraction;
        path[i].one_fraction = path[i + 1].one_fraction;
    }
}

/// The total permutation weight the path would have with the feature at `k` unwound.
fn unwound_sum(path: &[PathElement], depth: usize, k: usize) -> f64 {
    let one = path[k].one_fraction;
    let zero = path[k].zero_fraction;
    let n = (depth + 1) as f64;
    let inv_n = RECIP[depth + 1];
    let mut total = 0.0;
    if one != 0.0 {
        let scale = n / one;
        let mut next_one_portion = path[depth].pweight;
        for i in (0..depth).rev() {
            let tmp = next_one_portion * scale * RECIP[i + 1];
            total += tmp;
            next_one_portion = path[i].pweight - tmp * zero * (depth - i) as f64 * inv_n;
        }
    } else {
        let scale = n / zero;
        for i in (0..depth).rev() {
            total += path[i].pweight * scale * RECIP[depth - i];
        }
    }
    total
}
