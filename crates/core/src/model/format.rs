//! Ringfence's own model format: reading and writing the JSON the module docs describe.

use serde::{Deserialize, Serialize};

use super::iforest::{self, IsolationNode};
use super::{IsolationForest, Model, ModelError, ModelMeta, NodeSpec, TreeSpec};
use crate::features::{self, FeatureDef, FeatureType};

const FORMAT: &str = "ringfence-model";
const VERSION: u32 = 1;
const OBJECTIVE: &str = "binary:logistic";

/// Just enough to tell what a file is before holding it to the full schema, so an XGBoost
/// file gets "not a Ringfence model" rather than "unknown field `learner`".
#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    #[allow(dead_code)] // checked through Header
    format: String,
    #[allow(dead_code)] // checked through Header
    version: u32,
    catalog_version: u32,
    source: String,
    #[serde(default)]
    trained_at: Option<String>,
    #[serde(default)]
    notes: serde_json::Value,
    objective: String,
    base_margin: f64,
    feature_names: Vec<String>,
    #[serde(default)]
    feature_types: Option<Vec<String>>,
    trees: Vec<TreeFile>,
    #[serde(default)]
    anomaly: Option<AnomalyFile>,
}

/// The optional `anomaly` section: an isolation forest with its own features.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnomalyFile {
    method: String,
    sample_size: usize,
    feature_names: Vec<String>,
    #[serde(default)]
    feature_types: Option<Vec<String>>,
    trees: Vec<IsolationTreeFile>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct IsolationTreeFile {
    nodes: Vec<IsolationNodeFile>,
}

/// An isolation-tree node as written: a split has the first four fields, a leaf has `size`.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct IsolationNodeFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    feature: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    left: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    right: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<usize>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TreeFile {
    nodes: Vec<NodeFile>,
}

/// A node as written: a split has the first five fields, a leaf has `leaf`; both have `cover`.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    feature: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    left: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    right: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_left: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    leaf: Option<f64>,
    cover: f64,
}

/// Reads a model in Ringfence's format.
pub(super) fn parse(src: &str) -> Result<Model, ModelError> {
    let header: Header = serde_json::from_str(src).map_err(ModelError::json)?;
    match (header.format.as_deref(), header.version) {
        (Some(FORMAT), Some(VERSION)) => {}
        (Some(FORMAT), Some(v)) => {
            return Err(ModelError::Unsupported(format!(
                "Ringfence model format version {v}; this build reads version {VERSION}"
            )))
        }
        (Some(FORMAT), None) => {
            return Err(ModelError::Invalid("missing `version`".to_owned()));
        }
        _ => {
            return Err(ModelError::Unsupported(format!(
                "not a Ringfence model (it lacks \"format\": \"{FORMAT}\"); load XGBoost models as XGBoost"
            )))
        }
    }
    let file: ModelFile = serde_json::from_str(src).map_err(ModelError::json)?;
    if file.objective != OBJECTIVE {
        return Err(ModelError::UnsupportedObjective(file.objective));
    }
    let mut notes = match file.notes {
        serde_json::Value::Null => serde_json::Map::new(),
        serde_json::Value::Object(map) => map,
        _ => {
            return Err(ModelError::Invalid(
                "notes must be a JSON object".to_owned(),
            ))
        }
    };
    if let Some(note) = check_catalog(
        file.catalog_version,
        &file.feature_names,
        file.feature_types.as_deref(),
    )? {
        notes.insert("catalog_note".to_owned(), note.into());
    }

    let trees = file
        .trees
        .into_iter()
        .enumerate()
        .map(|(t, tree)| {
            let nodes = tree
                .nodes
                .into_iter()
                .enumerate()
                .map(|(n, node)| node_spec(t, n, node))
                .collect::<Result<_, _>>()?;
            Ok(TreeSpec { nodes })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;

    let meta = ModelMeta {
        catalog_version: file.catalog_version,
        source: file.source,
        trained_at: file.trained_at,
        notes: serde_json::Value::Object(notes),
    };
    let model = Model::assemble(file.feature_names, &trees, file.base_margin, meta)?;
    match file.anomaly {
        None => Ok(model),
        Some(anomaly) => Ok(model.with_anomaly(parse_anomaly(file.catalog_version, anomaly)?)),
    }
}

/// Validates the `anomaly` section into a forest. Its features are checked against the
/// catalog like the model's; the model's own check has already noted another catalog version.
fn parse_anomaly(catalog_version: u32, file: AnomalyFile) -> Result<IsolationForest, ModelError> {
    if file.method != iforest::METHOD {
        return Err(ModelError::Unsupported(format!(
            "anomaly method `{}`; this build reads `{}`",
            file.method,
            iforest::METHOD
        )));
    }
    check_catalog(
        catalog_version,
        &file.feature_names,
        file.feature_types.as_deref(),
    )?;
    let trees = file
        .trees
        .into_iter()
        .enumerate()
        .map(|(t, tree)| {
            tree.nodes
                .into_iter()
                .enumerate()
                .map(|(n, node)| isolation_node(t, n, node))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    IsolationForest::assemble(file.feature_names, file.sample_size, trees)
}

fn isolation_node(
    tree: usize,
    node: usize,
    n: IsolationNodeFile,
) -> Result<IsolationNode, ModelError> {
    let bad = |reason: String| ModelError::InvalidIsolationTree { tree, node, reason };
    let split_fields = [
        n.feature.is_some(),
        n.threshold.is_some(),
        n.left.is_some(),
        n.right.is_some(),
    ];
    if let Some(size) = n.size {
        if split_fields.contains(&true) {
            return Err(bad("a node is a leaf or a split, not both".to_owned()));
        }
        return Ok(IsolationNode::Leaf { size });
    }
    match (n.feature, n.threshold, n.left, n.right) {
        (Some(feature), Some(threshold), Some(left), Some(right)) => Ok(IsolationNode::Split {
            feature,
            threshold,
            left,
            right,
        }),
        _ if !split_fields.contains(&true) => Err(bad(
            "a node needs `size`, or `feature`, `threshold`, `left` and `right`".to_owned(),
        )),
        _ => Err(bad(format!(
            "a split lacks {}",
            missing_fields(&["feature", "threshold", "left", "right"], &split_fields)
        ))),
    }
}

/// The names whose `present` flag is false, quoted and comma-separated.
fn missing_fields(names: &[&str], present: &[bool]) -> String {
    let missing: Vec<_> = names
        .iter()
        .zip(present)
        .filter(|(_, present)| !**present)
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    missing.join(", ")
}

/// Checks recorded feature types against the catalog. A model from another catalog version
/// loads only if it recorded its types and every feature still exists with the same one; then
/// this returns the note saying so.
fn check_catalog(
    model_version: u32,
    names: &[String],
    types: Option<&[String]>,
) -> Result<Option<String>, ModelError> {
    let current = features::CATALOG_VERSION;
    let other_catalog = model_version != current;
    let mismatch = |reason: String| ModelError::CatalogMismatch {
        model: model_version,
        current,
        reason,
    };
    let Some(types) = types else {
        if other_catalog {
            return Err(mismatch(
                "the model does not record its `feature_types`, so they cannot be checked; retrain it"
                    .to_owned(),
            ));
        }
        return Ok(None);
    };
    if types.len() != names.len() {
        return Err(ModelError::Invalid(format!(
            "{} feature types for {} feature names",
            types.len(),
            names.len()
        )));
    }
    for (name, ty) in names.iter().zip(types) {
        let recorded = [FeatureType::Number, FeatureType::Bool, FeatureType::Text]
            .into_iter()
            .find(|t| t.name() == ty)
            .ok_or_else(|| {
                ModelError::Invalid(format!(
                    "feature type `{ty}` of `{name}` is not `number` or `bool`"
                ))
            })?;
        match features::lookup(name) {
            None if other_catalog => {
                return Err(mismatch(format!(
                    "feature `{name}` no longer exists; retrain the model"
                )))
            }
            // Reported as an unknown feature when the model is assembled.
            None => {}
            Some(def) if def.ty != recorded => {
                let reason = format!(
                    "feature `{name}` was a {} and is now a {}",
                    recorded.name(),
                    def.ty.name()
                );
                return Err(if other_catalog {
                    mismatch(format!("{reason}; retrain the model"))
                } else {
                    ModelError::Invalid(reason)
                });
            }
            Some(_) => {}
        }
    }
    Ok(other_catalog.then(|| {
        format!(
            "built for feature catalog v{model_version}, loaded into v{current}: its {} features exist with the same types",
            names.len()
        )
    }))
}

fn node_spec(tree: usize, node: usize, n: NodeFile) -> Result<NodeSpec, ModelError> {
    let bad = |reason: &str| ModelError::InvalidTree {
        tree,
        node,
        reason: reason.to_owned(),
    };
    let split_fields = [
        n.feature.is_some(),
        n.threshold.is_some(),
        n.left.is_some(),
        n.right.is_some(),
        n.default_left.is_some(),
    ];
    if let Some(value) = n.leaf {
        if split_fields.contains(&true) {
            return Err(bad("a node is a leaf or a split, not both"));
        }
        return Ok(NodeSpec::Leaf {
            value,
            cover: n.cover,
        });
    }
    match (n.feature, n.threshold, n.left, n.right, n.default_left) {
        (Some(feature), Some(threshold), Some(left), Some(right), Some(default_left)) => {
            Ok(NodeSpec::Split {
                feature,
                threshold,
                left,
                right,
                default_left,
                cover: n.cover,
            })
        }
        _ if !split_fields.contains(&true) => Err(bad(
            "a node needs `leaf`, or `feature`, `threshold`, `left`, `right` and `default_left`",
        )),
        _ => Err(bad(&format!(
            "a split lacks {}",
            missing_fields(
                &["feature", "threshold", "left", "right", "default_left"],
                &split_fields
            )
        ))),
    }
}

/// Writes a model: header fields one per line, then one line per tree, so files diff well.
pub(super) fn write(model: &Model) -> String {
    let meta = model.meta();
    let feature_types = type_names(&model.features);
    let header: [(&str, serde_json::Value); 10] = [
        ("format", FORMAT.into()),
        ("version", VERSION.into()),
        ("catalog_version", meta.catalog_version.into()),
        ("source", meta.source.clone().into()),
        ("trained_at", meta.trained_at.clone().into()),
        ("notes", meta.notes.clone()),
        ("objective", OBJECTIVE.into()),
        ("base_margin", model.base_margin.into()),
        ("feature_names", model.feature_names.clone().into()),
        ("feature_types", feature_types.into()),
    ];
    let mut out = String::from("{\n");
    for (key, value) in header {
        out.push_str(&format!("\"{key}\": {value},\n"));
    }
    out.push_str("\"trees\": [");
    for (i, tree) in model.forest.tree_specs().into_iter().enumerate() {
        out.push_str(if i == 0 { "\n" } else { ",\n" });
        let file = TreeFile {
            nodes: tree.nodes.into_iter().map(node_file).collect(),
        };
        let line = serde_json::to_string(&file).expect("structs of plain numbers serialize");
        out.push_str(&line);
    }
    out.push_str("\n]");
    if let Some(anomaly) = model.anomaly() {
        write_anomaly(anomaly, &mut out);
    }
    out.push_str("\n}\n");
    out
}

/// Appends the `anomaly` section, laid out like the model: header lines, then one per tree.
fn write_anomaly(forest: &IsolationForest, out: &mut String) {
    let header: [(&str, serde_json::Value); 4] = [
        ("method", iforest::METHOD.into()),
        ("sample_size", forest.sample_size().into()),
        ("feature_names", forest.feature_names().to_vec().into()),
        ("feature_types", type_names(forest.features()).into()),
    ];
    out.push_str(",\n\"anomaly\": {\n");
    for (key, value) in header {
        out.push_str(&format!("\"{key}\": {value},\n"));
    }
    out.push_str("\"trees\": [");
    for (i, nodes) in forest.tree_nodes().into_iter().enumerate() {
        out.push_str(if i == 0 { "\n" } else { ",\n" });
        let file = IsolationTreeFile {
            nodes: nodes.into_iter().map(isolation_node_file).collect(),
        };
        let line = serde_json::to_string(&file).expect("structs of plain numbers serialize");
        out.push_str(&line);
    }
    out.push_str("\n]\n}");
}

fn type_names(features: &[&'static FeatureDef]) -> Vec<&'static str> {
    features.iter().map(|d| d.ty.name()).collect()
}

fn isolation_node_file(node: IsolationNode) -> IsolationNodeFile {
    match node {
        IsolationNode::Split {
            feature,
            threshold,
            left,
            right,
        } => IsolationNodeFile {
            feature: Some(feature),
            threshold: Some(threshold),
            left: Some(left),
            right: Some(right),
            size: None,
        },
        IsolationNode::Leaf { size } => IsolationNodeFile {
            feature: None,
            threshold: None,
            left: None,
            right: None,
            size: Some(size),
        },
    }
}

fn node_file(node: NodeSpec) -> NodeFile {
    match node {
        NodeSpec::Split {
            feature,
            threshold,
            left,
            right,
            default_left,
            cover,
        } => NodeFile {
            feature: Some(feature),
            threshold: Some(threshold),
            left: Some(left),
            right: Some(right),
            default_left: Some(default_left),
            leaf: None,
            cover,
        },
        NodeSpec::Leaf { value, cover } => NodeFile {
            feature: None,
            threshold: None,
            left: None,
            right: None,
            default_left: None,
            leaf: Some(value),
            cover,
        },
    }
}
