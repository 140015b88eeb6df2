//! The analyst rule language: rules written in TOML with CEL-like conditions, checked against
//! the feature catalog when loaded and compiled to trees that read [`FeatureValues`] directly.
//!
//! # Layout
//! One stage per file, in the order a rule file flows through them:
//! - `file.rs`: the TOML rule file: keys, defaults, limits, and mapping every error back to the
//!   line and column of the file.
//! - `lexer.rs`: condition text to tokens.
//! - `parser.rs`: tokens to a syntax tree, with the nesting limit enforced before recursion.
//! - `typecheck.rs`: names resolved against the catalog, types checked, typed trees built.
//! - `compile.rs`: constant folding and the allocation-free evaluator behind [`Rule::matches`].
//! - `template.rs`: reason templates (`{feature.name}` placeholders) and their rendering.
//! - `edit.rs`: changes to a rule file's text that keep its comments and layout (a rule's
//!   mode flipped from the dashboard).
//!
//! # Rule file
//! ```toml
//! [[rule]]
//! name = "card_velocity"          # required: a-z, 0-9, `_`, `-`; unique in the file
//! description = "More than 3 card transactions in a minute"   # optional
//! category = "velocity"           # optional, default "rule"
//! when = "card.count_1m >= 3"     # required: a condition of type bool
//! score = 60                      # required: score points, -100..=100
//! action = "review"               # optional: approve | review | challenge | block (a minimum)
//! reason = "card made {card.count_1m} transactions in the minute before this one"   # optional
//! mode = "active"                 # optional: active (default) | shadow
//! ```
//! Unknown keys are errors, so a typo never silently disables a setting. A file without rules
//! is valid. Limits: files of 1 MiB, 1000 rules, conditions of 4096 bytes with at most 512
//! nodes (values, names, operators, calls and lists) nested at most 64 levels deep, reason
//! templates of 1024 bytes. Every error of the file is reported at once, each with its rule,
//! line and column.
//!
//! # Conditions
//! - Values: numbers (`3`, `2.5`, `1e3`), strings (`"..."` or `'...'`, escapes `\"` `\'` `\\`
//!   `\n` `\t`), `true`, `false`, and literal lists (`[1, 2]`, `["US", "GB"]`), which may only
//!   appear on the right of `in`.
//! - Features by their dotted catalog names: `card.count_1m`, `tx.amount`, `tx.kind`.
//! - Operators, loosest first: `||`; `&&`; `==` `!=`; `<` `<=` `>` `>=` `in`; `+` `-`;
//!   `*` `/` `%`; unary `!` `-`. Comparisons do not chain: write `0 < x && x < 5`.
//! - Functions: `has(feature)`, `abs(n)`, `min(n, n, ...)`, `max(n, n, ...)`, `lower(s)`,
//!   `contains(s, sub)`, `starts_with(s, prefix)`, `ends_with(s, suffix)`. `lower` maps
//!   character by character (Unicode simple lowercase).
//! - Types: number, bool, string, list. `==` and `!=` compare two values of the same type;
//!   ordering and arithmetic need numbers; `&&`, `||` and `!` need bools; the whole condition
//!   must be a bool.
//!
//! # Missing values: what analysts must know
//! A feature can be missing: no card on the transaction, no history yet, no location. A rule
//! never guesses; it uses three-valued (Kleene) logic with a third truth value, UNKNOWN:
//! - Arithmetic on a missing value gives a missing value; so does division or `%` by zero.
//!   `min` and `max` are missing when any argument is.
//! - A comparison, `in`, or string function touching a missing value is UNKNOWN, and so is a
//!   missing bool feature itself.
//! - `!UNKNOWN` is UNKNOWN, so `!(tx.kind == "refund")` does not match a transaction without a
//!   kind. `false && UNKNOWN` is false, `true || UNKNOWN` is true; otherwise `&&` and `||` with
//!   an UNKNOWN operand are UNKNOWN.
//! - `has(feature)` is never UNKNOWN: it tells whether the value is present.
//! - A rule matches only when its condition is TRUE. To fire on a missing value, say so:
//!   `!has(card.amount_mean) || card.amount_ratio > 5`.
//!
//! # Reasons
//! `reason` is a template: `{feature.name}` is replaced by the feature's value (integers without
//! decimals, other numbers with at most 2, bools as `true`/`false`, text as is, a missing value
//! as `n/a`); `{{` and `}}` write literal braces. Without a `reason`, the description (else the
//! name) is used verbatim.

mod compile;
mod edit;
mod file;
mod lexer;
mod parser;
mod template;

pub use edit::{set_mode, EditError};
pub use template::format_number;
mod typecheck;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::decision::Action;
use crate::features::FeatureValues;

/// Largest rule file, in bytes (checked before the TOML is parsed).
const MAX_SOURCE_BYTES: usize = 1024 * 1024;
/// Most rules one file may hold.
const MAX_RULES: usize = 1000;
/// Most syntax nodes (values, names, operators, calls, lists) in one condition.
const MAX_NODES: usize = 512;
/// Longest condition, in bytes.
const MAX_CONDITION_BYTES: usize = 4096;
/// Deepest nesting of a condition (parentheses, operators, calls, lists).
const MAX_DEPTH: usize = 64;
/// Longest reason template, in bytes.
const MAX_TEMPLATE_BYTES: usize = 1024;

/// A loaded, checked and compiled set of rules.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// A set without rules.
    pub fn empty() -> RuleSet {
        RuleSet { rules: Vec::new() }
    }

    /// Parses, type-checks and compiles a TOML rule file, reporting every error it contains.
    pub fn from_toml(source: &str) -> Result<RuleSet, RuleErrors> {
        file::load(source)
            .map(|rules| RuleSet { rules })
            .map_err(RuleErrors)
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the set has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule of this name, if the set has one.
    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Unique name (`[a-z0-9_-]+`).
    pub name: String,
    /// What the rule looks for, for analysts (may be empty).
    pub description: String,
    /// Alert category (`velocity`, `ring`, ...); `rule` unless set.
    pub category: String,
    /// Score points added when the rule matches (-100..=100).
    pub weight: f64,
    /// Minimum action forced when the rule matches.
    pub action: Option<Action>,
    /// Whether a match counts (active) or is only recorded (shadow).
    pub mode: RuleMode,
    /// Condition source text.
    pub when: String,
    /// Reason template source text (the escaped description or name when none was given).
    pub reason: String,
    condition: compile::Condition,
    template: template::Template,
    features: Vec<&'static str>,
}

impl Rule {
    /// Whether the condition is TRUE for these values (UNKNOWN does not match). No allocation.
    #[inline]
    pub fn matches(&self, f: &FeatureValues<'_>) -> bool {
        self.condition.matches(f)
    }

    /// The reason template filled in with these values.
    pub fn render_reason(&self, f: &FeatureValues<'_>) -> String {
        self.template.render(f)
    }

    /// Catalog names the condition reads, each once, in order of first use.
    pub fn features(&self) -> &[&'static str] {
        &self.features
    }
}

/// Whether a rule's matches affect decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleMode {
    /// Matches add score and may force an action.
    Active,
    /// Matches are recorded next to the decision, without effect on it.
    Shadow,
}

/// One problem in a rule file, located at the offending token.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleError {
    /// The rule it belongs to, when it is inside a named rule.
    pub rule: Option<String>,
    /// 1-based line in the file (in the expression, for [`check_expression`]).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, and how to fix it when we can tell.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(rule) = &self.rule {
            write!(f, "rule `{rule}`, ")?;
        }
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for RuleError {}

/// Every problem found in a rule file, in file order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

/// Type-checks a lone condition (positions are 1-based within it), for an editor.
pub fn check_expression(source: &str) -> Result<(), RuleError> {
    match compile_condition(source) {
        Ok(_) => Ok(()),
        Err(diags) => {
            let first = diags.into_iter().min_by_key(|d| d.offset);
            let (offset, message) = match first {
                Some(d) => (d.offset, d.message),
                None => (0, "invalid condition".to_owned()),
            };
            let (line, column) = line_col(source, offset);
            Err(RuleError {
                rule: None,
                line,
                column,
                message,
            })
        }
    }
}

/// A problem at a byte offset of the text being checked (a condition or a template).
#[derive(Clone, Debug, PartialEq)]
struct Diag {
    offset: usize,
    message: String,
}

impl Diag {
    fn new(offset: usize, message: impl Into<String>) -> Diag {
        Diag {
            offset,
            message: message.into(),
        }
    }
}

/// A condition that passed every stage: its compiled tree and the features it reads.
#[derive(Debug)]
struct CompiledCondition {
    condition: compile::Condition,
    features: Vec<&'static str>,
}

/// Runs a condition through every stage: length limit, lexer, parser, type check, compile.
fn compile_condition(source: &str) -> Result<CompiledCondition, Vec<Diag>> {
    if source.len() > MAX_CONDITION_BYTES {
        return Err(vec![Diag::new(
            0,
            format!(
                "condition is {} bytes long (at most {MAX_CONDITION_BYTES})",
                source.len()
            ),
        )]);
    }
    let expr = parser::parse(source).map_err(|d| vec![d])?;
    let checked = typecheck::check(&expr)?;
    Ok(CompiledCondition {
        condition: compile::Condition::new(checked.root),
        features: checked.features,
    })
}

/// The 1-based line and column (in characters) of a byte offset in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// The candidate closest to `name` by edit distance, when it is close enough to be a typo.
fn did_you_mean<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    const LONGEST: usize = 64;
    let len = name.chars().count();
    if len == 0 || len > LONGEST {
        return None;
    }
    let limit = (len / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// ` (did you mean `x`?)` or nothing.
fn suggestion<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    did_you_mean(name, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// Optimal string alignment distance: insertions, deletions, substitutions and adjacent
/// transpositions each cost 1, so `scroe` is one edit from `score`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// Shortens user text quoted in a message so a hostile input cannot make a huge one.
fn excerpt(text: &str) -> String {
    const LONGEST: usize = 40;
    if text.chars().count() <= LONGEST {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(LONGEST - 3).collect();
        short.push_str("...");
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone + fmt::Debug>() {}

    #[test]
    fn rule_set_is_shareable_across_threads() {
        assert_send_sync::<RuleSet>();
        assert_send_sync::<Rule>();
        assert!(RuleSet::empty().is_empty());
        assert_eq!(RuleSet::default().len(), 0);
    }

    #[test]
    fn rule_error_display_with_and_without_rule() {
        let inside = RuleError {
            rule: Some("card_velocity".into()),
            line: 4,
            column: 18,
            message: "unknown feature `card.cnt_1m` (did you mean `card.count_1m`?)".into(),
        };
        assert_eq!(
            inside.to_string(),
            "rule `card_velocity`, line 4, column 18: unknown feature `card.cnt_1m` (did you mean `card.count_1m`?)"
        );
        let outside = RuleError {
            rule: None,
            line: 2,
            column: 1,
            message: "invalid TOML".into(),
        };
        assert_eq!(outside.to_string(), "line 2, column 1: invalid TOML");
        let all = RuleErrors(vec![inside.clone(), outside.clone()]);
        assert_eq!(all.to_string(), format!("{inside}\n{outside}"));
    }

    #[test]
    fn check_expression_accepts_a_valid_condition() {
        assert_eq!(
            check_expression("card.count_1m >= 3 && tx.kind == 'purchase'"),
            Ok(())
        );
    }

    #[test]
    fn check_expression_locates_errors_within_the_condition() {
        let err = check_expression("tx.amount > 10 &&\n  card.cnt_1m > 3").unwrap_err();
        assert_eq!((err.rule.as_deref(), err.line, err.column), (None, 2, 3));
        assert_eq!(
            err.message,
            "unknown feature `card.cnt_1m` (did you mean `card.count_1m`?)"
        );
    }

    #[test]
    fn check_expression_rejects_an_overlong_condition() {
        let long = format!("tx.amount > 1{}", " ".repeat(MAX_CONDITION_BYTES));
        let err = check_expression(&long).unwrap_err();
        assert_eq!((err.line, err.column), (1, 1));
        assert!(err.message.contains("at most 4096"), "{}", err.message);
    }

    #[test]
    fn mangled_conditions_give_located_errors_never_a_panic() {
        let good = "!(tx.kind in ['refund', \"return\"]) && -abs(card.amount_zscore) < -3.5e0\n\
                    || contains(lower(tx.merchant), 'é\\'') && min(1, tx.amount % 7) >= 1 / 0";
        assert_eq!(check_expression(good), Ok(()));
        let mut mangled: Vec<String> = good
            .char_indices()
            .map(|(i, _)| good[..i].to_owned())
            .collect();
        for (i, _) in good.char_indices() {
            for junk in [
                "(", ")", "[", "'", "\"", "\\", ",", "!", "-", "1", ".", "é", "&&",
            ] {
                mangled.push(format!("{}{junk}{}", &good[..i], &good[i..]));
            }
        }
        let mut rejected = 0;
        for source in &mangled {
            if let Err(e) = check_expression(source) {
                rejected += 1;
                let (last_line, last_column) = line_col(source, source.len());
                assert!(
                    (e.line, e.column) <= (last_line, last_column) && e.line >= 1 && e.column >= 1,
                    "{e} in {source:?}"
                );
            }
        }
        assert!(
            rejected > mangled.len() / 2,
            "{rejected} of {}",
            mangled.len()
        );
    }

    #[test]
    fn line_col_counts_characters_and_lines() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("abc", 2), (1, 3));
        assert_eq!(line_col("a\nbc", 3), (2, 2));
        assert_eq!(line_col("é = x", 3), (1, 3));
        // Past the end or inside a character: clamped, never a panic.
        assert_eq!(line_col("é", 1), (1, 1));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn edit_distance_counts_transpositions_once() {
        assert_eq!(edit_distance("score", "score"), 0);
        assert_eq!(edit_distance("scroe", "score"), 1);
        assert_eq!(edit_distance("card.cnt_1m", "card.count_1m"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn did_you_mean_only_suggests_close_names() {
        let names = ["score", "name", "when"];
        assert_eq!(did_you_mean("scroe", names), Some("score"));
        assert_eq!(did_you_mean("wen", names), Some("when"));
        assert_eq!(did_you_mean("completely_else", names), None);
    }

    #[test]
    fn excerpt_shortens_long_text() {
        assert_eq!(excerpt("short"), "short");
        let long = "x".repeat(100);
        assert_eq!(excerpt(&long).chars().count(), 40);
        assert!(excerpt(&long).ends_with("..."));
    }
}
