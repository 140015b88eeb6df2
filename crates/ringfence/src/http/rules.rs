//! The rules resource: the rules in force with their hit counts, their text, validation,
//! backtests, activation and a rule's mode; reloads of the file; the feature catalog rules
//! and models can use.
//!
//! Activations and mode changes are written to the audit trail (`rule.activate` on
//! `rules:in_force` with the rules added, removed and edited; `rule.mode` on `rule:<name>`).
//!
//! Every rule error has one shape wherever it comes from (a reload, a validation, an
//! activation): a 422 `invalid_rules` with `errors: [{rule, line, column, message}]`, lines
//! and columns counted in the text that was sent (or the file that was read).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use ringfence_core::event::FieldError;
use ringfence_core::features;
use ringfence_core::rules::{RuleMode, RuleSet};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::transactions::body_or_error;
use super::ApiContext;
use crate::auth::Principal;
use crate::backtest::{BacktestError, DEFAULT_HOURS, MAX_HOURS};
use crate::host::ActivateError;

/// The routes of rule editing (the older `GET /v1/rules`, reload and catalog are in the main
/// router).
pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/v1/rules", axum::routing::put(activate))
        .route("/v1/rules/source", get(source))
        .route("/v1/rules/validate", post(validate))
        .route("/v1/rules/backtest", post(backtest))
        .route("/v1/rules/{name}/mode", post(set_mode))
}

/// The active rules with hit counts, and the status of the last load.
pub async fn list(State(cx): State<ApiContext>) -> Json<serde_json::Value> {
    Json(cx.host.rules_view())
}

/// Reloads the rules file now; a broken file keeps the running rules (422 with the errors).
/// With shared state the new rules go through the log, so every node switches at once (503
/// when the log is unreachable).
pub async fn reload(State(cx): State<ApiContext>) -> Result<Json<serde_json::Value>, ApiError> {
    match cx.host.reload_rules().await? {
        Ok(n) => Ok(Json(serde_json::json!({ "reloaded": true, "rules": n }))),
        Err(errors) => Err(ApiError::InvalidRules(errors)),
    }
}

/// The feature catalog.
pub async fn catalog() -> Json<serde_json::Value> {
    let list: Vec<_> = features::all()
        .map(|d| serde_json::json!({ "name": d.name, "type": d.ty.name(), "description": d.description }))
        .collect();
    Json(serde_json::json!({ "version": features::CATALOG_VERSION, "features": list }))
}

/// `GET /v1/rules/source`: the text of the rules in force, its version and file.
async fn source(State(cx): State<ApiContext>) -> Json<serde_json::Value> {
    let status = cx.host.rules_status_snapshot();
    Json(json!({
        "source": &*cx.host.rules_source(),
        "version": status.version,
        "loaded_at": status.loaded_at,
        "path": status.path,
    }))
}

/// A body with a rule file's text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceBody {
    source: Option<String>,
}

/// `POST /v1/rules/validate`: `{valid: true, rules: n}`, or 422 with every error.
async fn validate(
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body: SourceBody = parse_body(body)?;
    let rules = compile(body.source)?;
    Ok(Json(json!({ "valid": true, "rules": rules.len() })))
}

/// `POST /v1/rules/backtest` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BacktestBody {
    source: Option<String>,
    hours: Option<u32>,
}

/// `POST /v1/rules/backtest`: the candidate rules over the last `hours` of stored history.
async fn backtest(
    State(cx): State<ApiContext>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body: BacktestBody = parse_body(body)?;
    let hours = body.hours.unwrap_or(DEFAULT_HOURS);
    if !(1..=MAX_HOURS).contains(&hours) {
        return Err(FieldError::new("hours", format!("must be from 1 to {MAX_HOURS}")).into());
    }
    let rules = compile(body.source)?;
    let report = cx.host.backtest(rules, hours).await.map_err(|e| match e {
        BacktestError::Busy => ApiError::Busy(e.to_string()),
        BacktestError::TooMuchHistory { .. } => ApiError::TooLarge(e.to_string()),
        BacktestError::Store(_) | BacktestError::Stopped(_) => ApiError::Internal(e.to_string()),
    })?;
    Ok(Json(
        serde_json::to_value(report).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}

/// `PUT /v1/rules` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateBody {
    source: Option<String>,
    /// Mode for the rules that are not in force yet (`shadow` to try them without effect).
    new_rules_mode: Option<String>,
}

/// `PUT /v1/rules`: validates the text, writes it to the rules file and puts it in force
/// (with shared state, on every node at once).
async fn activate(
    State(cx): State<ApiContext>,
    who: Principal,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body: ActivateBody = parse_body(body)?;
    let new_rules_mode = body
        .new_rules_mode
        .as_deref()
        .map(|m| parse_mode("new_rules_mode", m))
        .transpose()?;
    let source = body
        .source
        .ok_or_else(|| FieldError::new("source", "is required"))?;
    let before = cx.host.active_rules();
    let activated = cx
        .host
        .activate_rules(source, new_rules_mode)
        .await
        .map_err(activate_error)?;
    tracing::info!(actor = %who.name, version = activated.version, rules = activated.rules, changed = activated.changed, "rules activated");
    if activated.changed {
        let mut detail = changes(&before, &cx.host.active_rules());
        detail["version"] = json!(activated.version);
        detail["rules"] = json!(activated.rules);
        detail["new_rules_mode"] = json!(new_rules_mode);
        audit(&cx, &who, "rule.activate", RULES_TARGET, detail).await;
    }
    Ok(Json(json!(activated)))
}

/// The audit trail's target for changes of the whole rule set (one rule's: `rule:<name>`).
const RULES_TARGET: &str = "rules:in_force";

/// Rules added, removed and edited (condition, score, action, mode, reason, category or
/// description) between two rule sets, by name.
fn changes(before: &RuleSet, after: &RuleSet) -> serde_json::Value {
    let same = |a: &ringfence_core::rules::Rule, b: &ringfence_core::rules::Rule| {
        a.when == b.when
            && a.weight == b.weight
            && a.action == b.action
            && a.mode == b.mode
            && a.reason == b.reason
            && a.category == b.category
            && a.description == b.description
    };
    let names =
        |set: &RuleSet, pick: &dyn Fn(&ringfence_core::rules::Rule) -> bool| -> Vec<String> {
            set.rules()
                .iter()
                .filter(|r| pick(r))
                .map(|r| r.name.clone())
                .collect()
        };
    json!({
        "added": names(after, &|r| before.get(&r.name).is_none()),
        "removed": names(before, &|r| after.get(&r.name).is_none()),
        "edited": names(after, &|r| before.get(&r.name).is_some_and(|b| !same(b, r))),
    })
}

/// Records a rules change in the audit trail. The change is in force whatever happens here,
/// so a failure to record it is logged (loudly) rather than reported as a failed change.
async fn audit(
    cx: &ApiContext,
    who: &Principal,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) {
    if let Err(e) = cx.host.audit(who, action, target, detail).await {
        tracing::error!(error = %e, action, target, actor = %who.name, "the audit trail could not record a rules change that is in force");
    }
}

/// `POST /v1/rules/{name}/mode` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: Option<String>,
}

/// `POST /v1/rules/{name}/mode`: one rule in force set to `active` or `shadow`, by editing
/// its `mode` line in the text in force, then activating that text.
async fn set_mode(
    State(cx): State<ApiContext>,
    who: Principal,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(name) = name.map_err(|e| ApiError::BadParam {
        field: "name",
        message: e.body_text(),
    })?;
    let body: ModeBody = parse_body(body)?;
    let mode = match body.mode.as_deref() {
        Some(m) => parse_mode("mode", m)?,
        None => return Err(FieldError::new("mode", "is required (`active` or `shadow`)").into()),
    };
    let activated = cx
        .host
        .set_rule_mode(&name, mode)
        .await
        .map_err(activate_error)?;
    tracing::info!(actor = %who.name, rule = %name, mode = mode.as_str(), version = activated.version, "rule mode set");
    if activated.changed {
        let detail = json!({ "mode": mode, "version": activated.version });
        audit(&cx, &who, "rule.mode", &format!("rule:{name}"), detail).await;
    }
    Ok(Json(json!({
        "name": name,
        "mode": mode,
        "version": activated.version,
        "rules": activated.rules,
        "changed": activated.changed,
    })))
}

/// Parses a JSON body into `T`, naming the field of a bad value.
fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body_or_error(body)?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            ApiError::InvalidField(FieldError::new(
                field.to_owned(),
                "is not a field of this request",
            ))
        } else if inner.is_data() && path != "." {
            let problem = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_owned();
            ApiError::InvalidField(FieldError::new(path, problem))
        } else {
            ApiError::MalformedJson(message)
        }
    })
}

/// The text, compiled, or 422 with every error; a missing text is a 400.
fn compile(source: Option<String>) -> Result<RuleSet, ApiError> {
    let source = source.ok_or_else(|| FieldError::new("source", "is required"))?;
    RuleSet::from_toml(&source).map_err(ApiError::InvalidRules)
}

fn parse_mode(field: &'static str, text: &str) -> Result<RuleMode, ApiError> {
    match text {
        "active" => Ok(RuleMode::Active),
        "shadow" => Ok(RuleMode::Shadow),
        _ => Err(FieldError::new(field, "must be `active` or `shadow`").into()),
    }
}

fn activate_error(e: ActivateError) -> ApiError {
    match e {
        ActivateError::Invalid(errors) => ApiError::InvalidRules(errors),
        ActivateError::NoSuchRule(name) => {
            ApiError::NotFound(format!("no rule named `{name}` is in force"))
        }
        ActivateError::NotEditable(name) => ApiError::BadParam {
            field: "name",
            message: format!(
                "rule `{name}` is written as an inline table; set its `mode` in the source and activate that"
            ),
        },
        ActivateError::NotSaved {
            path,
            cause,
            in_force,
        } => {
            tracing::error!(path = %path.display(), error = %cause, in_force, "the rules file could not be written");
            ApiError::RulesNotSaved { in_force }
        }
        ActivateError::Host(e) => e.into(),
    }
}
