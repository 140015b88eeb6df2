//! Isolation-forest anomaly scores (Liu, Ting & Zhou 2008, "Isolation Forest"): how few random
//! splits it takes to isolate a transaction from a sample of ordinary traffic. It needs no
//! labels, so it can flag kinds of fraud the supervised trees have never been shown.
//!
//! An isolation tree is stored as the same flat [`Forest`] the classifier walks, with each
//! leaf's value set to the path length it stands for, `depth + c(size)`. Scoring is then one
//! [`Forest::sum`]: allocation-free, eight trees at a time.
//!
//! # Semantics
//! - A split sends `x` left iff `(x as f32) < t` for the `f32` threshold `t` drawn at fit; the
//!   file stores the equivalent f64 boundary (`tree::f32_split_boundary`), which the shared
//!   tree walk compares in double precision, so fit and scoring route every value alike.
//! - Fitting: each tree grows on `sample_size` rows drawn without replacement. A node picks a
//!   feature uniformly among those not constant in it, and a threshold uniformly between the
//!   node's smallest and largest value of that feature, so both children get rows. It stops at
//!   one row or at depth `ceil(log2(sample_size))`; a leaf keeps the number of rows it holds.
//! - Missing values (`NaN`) play no part in drawing a split's range. Both when fitting and when
//!   scoring they go to the child holding more of the node's sample (left on a tie): when
//!   fitting, by the rows with a value on either side; when scoring, by the leaf sizes below
//!   each child, which record the same choice. A row missing a feature is thus grouped with the
//!   bulk of the node, not made to look rare by its absence. Infinite values (and finite ones
//!   beyond `f32`) do not draw ranges either, and go to the side they compare to.
//! - Score: `2^(-E[h(x)] / c(sample_size))`, where `h(x)` is the depth of the leaf `x` reaches
//!   plus `c(size)` of that leaf and `c(n) = 2 H(n-1) - 2 (n-1) / n` is the mean path length of
//!   an unsuccessful search in a binary search tree of `n` keys (`H(i) ~ ln i + 0.5772...`,
//!   `c(2) = 1`, `c(1) = 0`), as in the paper and scikit-learn. Scores are in `(0, 1]`: near 1
//!   is anomalous, about 0.5 or below is ordinary.

use std::collections::BTreeSet;

use super::tree::Forest;
use super::{resolve_features, ModelError, NodeSpec, TreeSpec, MAX_TREES};
use crate::features::{FeatureDef, FeatureValues};

/// Largest `sample_size` an isolation forest may be fitted or loaded with.
pub const MAX_SAMPLE_SIZE: usize = 1 << 20;

/// The method name an anomaly section of a model file carries.
pub(super) const METHOD: &str = "isolation-forest";

/// How to fit an [`IsolationForest`]; the default is the paper's (100 trees of 256 rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsolationParams {
    /// Number of trees.
    pub trees: usize,
    /// Rows each tree grows on, drawn without replacement; capped at the rows available.
    pub sample_size: usize,
    /// Seed of the generator that draws samples, features and thresholds: same seed and same
    /// rows, same forest.
    pub seed: u64,
}

impl Default for IsolationParams {
    fn default() -> Self {
        IsolationParams {
            trees: 100,
            sample_size: 256,
            seed: 0,
        }
    }
}

/// One node of an isolation tree as a fit or a file describes it, before validation.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum IsolationNode {
    /// `x` goes to `left` iff `(x as f32) < (threshold as f32)`.
    Split {
        /// Index into the forest's feature names.
        feature: usize,
        /// Split point, rounded to `f32` at load.
        threshold: f64,
        /// Node index of the `< threshold` branch.
        left: usize,
        /// Node index of the `>= threshold` branch.
        right: usize,
    },
    /// A leaf with the number of sampled rows that reached it (at least 1).
    Leaf {
        /// Rows of the tree's sample that ended here.
        size: usize,
    },
}

/// An unsupervised anomaly detector over catalog features: higher [`IsolationForest::score`],
/// more unusual transaction.
///
/// Built by [`IsolationForest::fit`], carried inside a [`super::Model`] (its `anomaly`
/// section) and immutable once built.
#[derive(Clone)]
pub struct IsolationForest {
    feature_names: Vec<String>,
    /// Catalog entry of each feature, parallel to `feature_names`.
    features: Vec<&'static FeatureDef>,
    sample_size: usize,
    /// `c(sample_size)`: the mean path length that scores are normalised by.
    norm: f64,
    /// Leaf values are path lengths `depth + c(size)`; covers are sample sizes; a missing
    /// value defaults to the child with the larger size.
    forest: Forest,
}

impl std::fmt::Debug for IsolationForest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsolationForest")
            .field("feature_names", &self.feature_names)
            .field("trees", &self.n_trees())
            .field("sample_size", &self.sample_size)
            .finish_non_exhaustive()
    }
}

impl IsolationForest {
    /// Fits a forest on `rows`, row-major with `n_features` values per row, named by catalog
    /// `feature_names` (number and bool features; `NaN` is missing).
    ///
    /// Deterministic: the same rows, names and parameters give the same forest. Errors if the
    /// shapes disagree, there are fewer than 2 rows, `trees` is not in `1..=MAX_TREES`,
    /// `sample_size` is not in `2..=MAX_SAMPLE_SIZE`, or a name is not a catalog number / bool.
    pub fn fit(
        rows: &[f64],
        n_features: usize,
        feature_names: Vec<String>,
        params: IsolationParams,
    ) -> Result<IsolationForest, ModelError> {
        let invalid = |reason: String| Err(ModelError::Invalid(format!("anomaly: {reason}")));
        if n_features == 0 {
            return invalid("an isolation forest needs at least one feature".to_owned());
        }
        if feature_names.len() != n_features {
            return invalid(format!(
                "{} feature names for {n_features} features",
                feature_names.len()
            ));
        }
        if rows.len() % n_features != 0 {
            return invalid(format!(
                "{} values are not whole rows of {n_features} features",
                rows.len()
            ));
        }
        let n_rows = rows.len() / n_features;
        if n_rows < 2 {
            return invalid(format!("{n_rows} rows; fitting needs at least 2"));
        }
        if !(1..=MAX_TREES).contains(&params.trees) {
            return invalid(format!(
                "{} trees; between 1 and {MAX_TREES} are allowed",
                params.trees
            ));
        }
        check_sample_size(params.sample_size)?;
        // Before the work, so a misspelt name fails at once.
        resolve_features(&feature_names)?;

        let sample_size = params.sample_size.min(n_rows);
        let mut grower = Grower {
            rows,
            n_features,
            // ceil(log2(sample_size)), the paper's height limit.
            height_limit: (usize::BITS - (sample_size - 1).leading_zeros()) as usize,
            rng: SplitMix64(params.seed),
            untried: Vec::with_capacity(n_features),
        };
        let mut chosen = BTreeSet::new();
        let mut sample = Vec::with_capacity(sample_size);
        let trees = (0..params.trees)
            .map(|_| {
                grower.draw_sample(n_rows, sample_size, &mut chosen, &mut sample);
                let mut nodes = Vec::new();
                grower.grow(&mut sample, 0, &mut nodes);
                nodes
            })
            .collect();
        IsolationForest::assemble(feature_names, sample_size, trees)
    }

    /// The one constructor fitting and loading end in: resolves features, validates the trees
    /// and turns leaf sizes into path lengths.
    pub(super) fn assemble(
        feature_names: Vec<String>,
        sample_size: usize,
        trees: Vec<Vec<IsolationNode>>,
    ) -> Result<IsolationForest, ModelError> {
        check_sample_size(sample_size)?;
        if trees.is_empty() || trees.len() > MAX_TREES {
            return Err(ModelError::Invalid(format!(
                "anomaly: {} trees; between 1 and {MAX_TREES} are allowed",
                trees.len()
            )));
        }
        if feature_names.is_empty() {
            return Err(ModelError::Invalid(
                "anomaly: an isolation forest needs at least one feature".to_owned(),
            ));
        }
        let features = resolve_features(&feature_names)?;
        let num_index: Vec<u16> = features.iter().map(|d| d.index as u16).collect();

        // First pass: the classifier's validation of the shape (ranges, cycles, shared
        // subtrees, depth, thresholds), with placeholders where sizes are not known yet. It
        // hands the trees back in preorder, where children follow their parent.
        let mut shapes = Vec::with_capacity(trees.len());
        for (t, nodes) in trees.iter().enumerate() {
            let nodes = nodes
                .iter()
                .enumerate()
                .map(|(n, node)| match *node {
                    IsolationNode::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    } => Ok(NodeSpec::Split {
                        feature,
                        threshold,
                        left,
                        right,
                        default_left: true,
                        cover: 1.0,
                    }),
                    IsolationNode::Leaf { size } if (1..=sample_size).contains(&size) => {
                        Ok(NodeSpec::Leaf {
                            value: 0.0,
                            cover: size as f64,
                        })
                    }
                    IsolationNode::Leaf { size } => Err(ModelError::InvalidIsolationTree {
                        tree: t,
                        node: n,
                        reason: format!(
                            "leaf size {size} is not between 1 and the sample size {sample_size}"
                        ),
                    }),
                })
                .collect::<Result<_, _>>()?;
            shapes.push(TreeSpec { nodes });
        }
        let shapes = Forest::build(&shapes, &num_index)
            .map_err(isolation_error)?
            .tree_specs();

        // Second pass: sizes bottom-up, depths top-down, then the real forest.
        let mut sizes = Vec::new();
        let mut depths = Vec::new();
        let mut final_trees = Vec::with_capacity(shapes.len());
        for (t, tree) in shapes.into_iter().enumerate() {
            let n = tree.nodes.len();
            sizes.clear();
            sizes.resize(n, 0usize);
            for i in (0..n).rev() {
                sizes[i] = match tree.nodes[i] {
                    NodeSpec::Leaf { cover, .. } => cover as usize,
                    NodeSpec::Split { left, right, .. } => sizes[left].saturating_add(sizes[right]),
                };
            }
            if sizes[0] != sample_size {
                return Err(ModelError::InvalidIsolationTree {
                    tree: t,
                    node: 0,
                    reason: format!(
                        "its leaves hold {} rows in all, not the sample size {sample_size}",
                        sizes[0]
                    ),
                });
            }
            depths.clear();
            depths.resize(n, 0usize);
            for i in 0..n {
                if let NodeSpec::Split { left, right, .. } = tree.nodes[i] {
                    depths[left] = depths[i] + 1;
                    depths[right] = depths[i] + 1;
                }
            }
            let nodes = tree
                .nodes
                .into_iter()
                .enumerate()
                .map(|(i, node)| match node {
                    NodeSpec::Split {
                        feature,
                        threshold,
                        left,
                        right,
                        ..
                    } => NodeSpec::Split {
                        feature,
                        threshold,
                        left,
                        right,
                        default_left: sizes[left] >= sizes[right],
                        cover: sizes[i] as f64,
                    },
                    NodeSpec::Leaf { cover, .. } => NodeSpec::Leaf {
                        value: depths[i] as f64 + average_path_length(sizes[i]),
                        cover,
                    },
                })
                .collect();
            final_trees.push(TreeSpec { nodes });
        }
        let forest = Forest::build(&final_trees, &num_index).map_err(isolation_error)?;
        Ok(IsolationForest {
            feature_names,
            features,
            sample_size,
            norm: average_path_length(sample_size),
            forest,
        })
    }

    /// The anomaly score of `f`, in `(0, 1]`: near 1 is anomalous, about 0.5 or below ordinary.
    ///
    /// Allocates nothing; a missing value follows the larger child (see the module docs).
    #[inline]
    pub fn score(&self, f: &FeatureValues<'_>) -> f64 {
        let mean_path = self.forest.sum(&f.num) / self.forest.n_trees() as f64;
        (-mean_path / self.norm).exp2()
    }

    /// The forest's input features, by catalog name.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.forest.n_trees()
    }

    /// Rows each tree was grown on (the `ψ` that normalises scores).
    pub fn sample_size(&self) -> usize {
        self.sample_size
    }

    /// Catalog entries of the features, parallel to [`IsolationForest::feature_names`].
    pub(super) fn features(&self) -> &[&'static FeatureDef] {
        &self.features
    }

    /// The trees back as nodes in preorder, for writing them out.
    pub(super) fn tree_nodes(&self) -> Vec<Vec<IsolationNode>> {
        self.forest
            .tree_specs()
            .into_iter()
            .map(|tree| {
                tree.nodes
                    .into_iter()
                    .map(|node| match node {
                        NodeSpec::Split {
                            feature,
                            threshold,
                            left,
                            right,
                            ..
                        } => IsolationNode::Split {
                            feature,
                            threshold,
                            left,
                            right,
                        },
                        NodeSpec::Leaf { cover, .. } => IsolationNode::Leaf {
                            size: cover as usize,
                        },
                    })
                    .collect()
            })
            .collect()
    }

    #[cfg(test)]
    pub(super) fn forest(&self) -> &Forest {
        &self.forest
    }
}

fn check_sample_size(sample_size: usize) -> Result<(), ModelError> {
    if (2..=MAX_SAMPLE_SIZE).contains(&sample_size) {
        Ok(())
    } else {
        Err(ModelError::Invalid(format!(
            "anomaly: sample size {sample_size} is not between 2 and {MAX_SAMPLE_SIZE}"
        )))
    }
}

/// Tree errors from the shared validation, renamed so they do not read as classifier trees.
fn isolation_error(e: ModelError) -> ModelError {
    match e {
        ModelError::InvalidTree { tree, node, reason } => {
            ModelError::InvalidIsolationTree { tree, node, reason }
        }
        ModelError::Invalid(reason) => ModelError::Invalid(format!("anomaly: {reason}")),
        other => other,
    }
}

/// `c(n)`: the mean path length of an unsuccessful search in a binary search tree of `n`
/// keys, the expected depth still to go below a leaf of `n` rows.
pub(super) fn average_path_length(n: usize) -> f64 {
    const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// Grows isolation trees over one set of rows.
struct Grower<'a> {
    rows: &'a [f64],
    n_features: usize,
    height_limit: usize,
    rng: SplitMix64,
    /// Scratch: features not yet tried at the current node.
    untried: Vec<usize>,
}

impl Grower<'_> {
    #[inline]
    fn value(&self, row: usize, feature: usize) -> f64 {
        self.rows[row * self.n_features + feature]
    }

    /// Draws `size` distinct rows of `0..n_rows` into `sample` (Floyd's algorithm: O(size)
    /// memory however many rows there are), in increasing order.
    fn draw_sample(
        &mut self,
        n_rows: usize,
        size: usize,
        chosen: &mut BTreeSet<usize>,
        sample: &mut Vec<usize>,
    ) {
        chosen.clear();
        for j in n_rows - size..n_rows {
            let t = self.rng.below(j + 1);
            if !chosen.insert(t) {
                chosen.insert(j);
            }
        }
        sample.clear();
        sample.extend(chosen.iter().copied());
    }

    /// Lays out the subtree over `sample` at `depth` in preorder; returns its root's index.
    fn grow(
        &mut self,
        sample: &mut [usize],
        depth: usize,
        nodes: &mut Vec<IsolationNode>,
    ) -> usize {
        let at = nodes.len();
        let split = if depth < self.height_limit && sample.len() > 1 {
            self.pick_split(sample)
        } else {
            None
        };
        let Some((feature, threshold)) = split else {
            nodes.push(IsolationNode::Leaf { size: sample.len() });
            return at;
        };
        nodes.push(IsolationNode::Leaf { size: 0 }); // replaced once the children exist
        let n_left = self.partition(sample, feature, threshold);
        let (left_rows, right_rows) = sample.split_at_mut(n_left);
        let left = self.grow(left_rows, depth + 1, nodes);
        let right = self.grow(right_rows, depth + 1, nodes);
        nodes[at] = IsolationNode::Split {
            feature,
            threshold: super::tree::f32_split_boundary(threshold),
            left,
            right,
        };
        at
    }

    /// A feature drawn uniformly among those not constant over `sample`, and a threshold
    /// drawn uniformly in its range; `None` when every feature is constant (or missing).
    fn pick_split(&mut self, sample: &[usize]) -> Option<(usize, f32)> {
        self.untried.clear();
        self.untried.extend(0..self.n_features);
        while !self.untried.is_empty() {
            let k = self.rng.below(self.untried.len());
            let feature = self.untried.swap_remove(k);
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &row in sample.iter() {
                let x = self.value(row, feature);
                // NaN and values beyond f32 do not draw the range.
                if (x as f32).is_finite() {
                    lo = lo.min(x);
                    hi = hi.max(x);
                }
            }
            // Rounding to f32 is monotone, so these are the f32 extremes; with no finite value
            // the comparison is `inf < -inf`, false.
            let (lo32, hi32) = (lo as f32, hi as f32);
            if lo32 < hi32 {
                let drawn = (lo + self.rng.unit() * (hi - lo)) as f32;
                // In (lo32, hi32]: rows at the minimum go left, rows at the maximum right.
                return Some((feature, drawn.clamp(next_up(lo32), hi32)));
            }
        }
        None
    }

    /// Reorders `sample` so the rows going left come first; returns how many do. Rows missing
    /// the feature join the side with more rows that have it (left on a tie).
    fn partition(&self, sample: &mut [usize], feature: usize, threshold: f32) -> usize {
        let mut n_left = partition_by(sample, |row| (self.value(row, feature) as f32) < threshold);
        let rest = &mut sample[n_left..];
        let n_missing = rest
            .iter()
            .filter(|&&row| self.value(row, feature).is_nan())
            .count();
        if n_missing > 0 && n_left >= rest.len() - n_missing {
            n_left += partition_by(rest, |row| self.value(row, feature).is_nan());
        }
        n_left
    }
}

/// Moves the items that satisfy `pred` to the front, returning how many there are.
fn partition_by(items: &mut [usize], pred: impl Fn(usize) -> bool) -> usize {
    let mut k = 0;
    for i in 0..items.len() {
        if pred(items[i]) {
            items.swap(k, i);
            k += 1;
        }
    }
    k
}

/// The least `f32` greater than finite `x` (`f32::next_up`, stable only from Rust 1.86).
fn next_up(x: f32) -> f32 {
    if x == 0.0 {
        f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() + 1)
    } else {
        f32::from_bits(x.to_bits() - 1)
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, well-mixed generator, reproducible from its
/// seed on every platform. Core has no `rand`, and fitting needs nothing stronger.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift: the bias, under `n / 2^64`, is nil at
    /// our sizes.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`, on a grid of `2^-53`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}
