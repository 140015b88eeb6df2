//! The rule file: TOML with one `[[rule]]` table per rule, checked key by key, every rule on
//! its own so that one bad rule does not hide the errors of the next.
//!
//! Errors point into the file. A condition or template error has an offset in the decoded
//! string; [`ValueMap`] walks the string's TOML source (basic, literal and multi-line strings,
//! escapes, line-ending backslashes) to turn that offset back into a byte of the file.

use std::collections::HashMap;
use std::ops::Range;

use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use super::template;
use super::{
    compile_condition, excerpt, line_col, suggestion, Rule, RuleError, RuleMode, MAX_RULES,
    MAX_SOURCE_BYTES,
};
use crate::decision::Action;

/// Every key a `[[rule]]` table may have.
const RULE_KEYS: [&str; 8] = [
    "name",
    "description",
    "category",
    "when",
    "score",
    "action",
    "reason",
    "mode",
];

/// Loads every rule of a TOML file, or every error in it, in file order.
pub(super) fn load(source: &str) -> Result<Vec<Rule>, Vec<RuleError>> {
    if source.len() > MAX_SOURCE_BYTES {
        // Refused before parsing: the TOML parser's time and memory grow with the file.
        let message = format!(
            "the rule file is {} bytes long (at most {MAX_SOURCE_BYTES})",
            source.len()
        );
        let mut at = MAX_SOURCE_BYTES;
        while !source.is_char_boundary(at) {
            at -= 1;
        }
        return Err(vec![error_at(source, None, at, message)]);
    }
    let doc = match DeTable::parse(source) {
        Ok(doc) => doc,
        Err(e) => {
            let offset = e.span().map_or(0, |span| span.start);
            let message = format!("invalid TOML: {}", e.message());
            return Err(vec![error_at(source, None, offset, message)]);
        }
    };
    let mut errors = Vec::new();
    let mut tables: &[Spanned<DeValue<'_>>] = &[];
    for (key, value) in doc.get_ref().iter() {
        let key_text: &str = key.get_ref();
        if key_text != "rule" {
            let hint = suggestion(key_text, ["rule"]);
            let message = format!(
                "unknown top-level key `{}`{hint}: each rule goes under a `[[rule]]` header",
                excerpt(key_text)
            );
            errors.push(error_at(source, None, key.span().start, message));
            continue;
        }
        match value.get_ref() {
            DeValue::Array(items) if items.iter().all(|i| i.get_ref().is_table()) => {
                tables = &items[..];
            }
            other => {
                let message = format!(
                    "`rule` must be a list of tables, one `[[rule]]` header per rule, found {}",
                    other.type_str()
                );
                errors.push(error_at(source, None, value.span().start, message));
            }
        }
    }
    if let Some(first_extra) = tables.get(MAX_RULES) {
        let message = format!("too many rules: {} (at most {MAX_RULES})", tables.len());
        errors.push(error_at(source, None, first_extra.span().start, message));
        tables = &tables[..MAX_RULES];
    }

    let mut rules = Vec::with_capacity(tables.len());
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for table in tables {
        let DeValue::Table(fields) = table.get_ref() else {
            continue;
        };
        let checked = check_rule(source, table.span(), fields);
        if let Some((name, at)) = checked.valid_name {
            let (line, _) = line_col(source, at);
            if let Some(first) = first_line.get(&name) {
                let message =
                    format!("duplicate rule name `{name}` (first defined on line {first})");
                errors.push(error_at(source, Some(&name), at, message));
                continue;
            }
            first_line.insert(name, line);
        }
        match checked.rule {
            Ok(rule) => rules.push(rule),
            Err(rule_errors) => errors.extend(rule_errors),
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(errors)
    }
}

fn error_at(source: &str, rule: Option<&str>, offset: usize, message: String) -> RuleError {
    let (line, column) = line_col(source, offset);
    RuleError {
        rule: rule.map(str::to_owned),
        line,
        column,
        message,
    }
}

/// One rule table, checked.
struct CheckedRule {
    /// The name and its file offset, when it is valid (for the duplicate check).
    valid_name: Option<(String, usize)>,
    rule: Result<Rule, Vec<RuleError>>,
}

/// Problems found in one rule, at file offsets.
#[derive(Default)]
struct Problems(Vec<(usize, String)>);

impl Problems {
    fn push(&mut self, offset: usize, message: impl Into<String>) {
        self.0.push((offset, message.into()));
    }

    /// The value as a string, or a problem at it.
    fn string<'v>(&mut self, key: &str, value: &'v Spanned<DeValue<'_>>) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                self.push(
                    value.span().start,
                    format!("`{key}` must be a string, found {}", other.type_str()),
                );
                None
            }
        }
    }
}

fn check_rule(source: &str, span: Range<usize>, table: &DeTable<'_>) -> CheckedRule {
    let mut problems = Problems::default();
    for (key, _) in table.iter() {
        let key_text: &str = key.get_ref();
        if !RULE_KEYS.contains(&key_text) {
            let hint = suggestion(key_text, RULE_KEYS);
            let hint = if hint.is_empty() {
                format!(" (keys: {})", RULE_KEYS.join(", "))
            } else {
                hint
            };
            problems.push(
                key.span().start,
                format!("unknown key `{}` in rule{hint}", excerpt(key_text)),
            );
        }
    }
    let field = |name: &str| {
        table
            .iter()
            .find(|(key, _)| AsRef::<str>::as_ref(key.get_ref()) == name)
            .map(|(_, value)| value)
    };
    let missing = |problems: &mut Problems, key: &str, what: &str| {
        problems.push(span.start, format!("rule is missing `{key}` ({what})"));
    };

    // The name first: every other error of the rule is reported under it.
    let mut valid_name = None;
    let name = match field("name") {
        None => {
            missing(
                &mut problems,
                "name",
                "a unique name such as \"card_velocity\"",
            );
            None
        }
        Some(value) => problems.string("name", value).inspect(|name| {
            if valid_rule_name(name) {
                valid_name = Some((name.to_string(), value.span().start));
            } else {
                problems.push(
                    value.span().start,
                    format!(
                        "invalid rule name `{}`: use lowercase letters a-z, digits, `_` and `-`",
                        excerpt(name)
                    ),
                );
            }
        }),
    };

    let description = match field("description") {
        Some(value) => problems.string("description", value),
        None => Some(""),
    };
    let category = match field("category") {
        Some(value) => problems.string("category", value).filter(|c| {
            let ok = !c.trim().is_empty();
            if !ok {
                problems.push(value.span().start, "`category` must not be empty");
            }
            ok
        }),
        None => Some("rule"),
    };

    let condition =
        match field("when") {
            None => {
                missing(
                    &mut problems,
                    "when",
                    "the condition under which the rule fires",
                );
                None
            }
            Some(value) => problems
                .string("when", value)
                .and_then(|text| match compile_condition(text) {
                    Ok(compiled) => Some((text, compiled)),
                    Err(diags) => {
                        let map = ValueMap::new(source, value.span(), text);
                        for d in diags {
                            problems.push(map.file_offset(d.offset), d.message);
                        }
                        None
                    }
                }),
        };

    let weight = match field("score") {
        None => {
            missing(
                &mut problems,
                "score",
                "the points it adds, from -100 to 100",
            );
            None
        }
        Some(value) => match score(source, value) {
            Ok(weight) => Some(weight),
            Err(message) => {
                problems.push(value.span().start, message);
                None
            }
        },
    };

    let action = match field("action") {
        None => Some(None),
        Some(value) => problems.string("action", value).and_then(|text| {
            let action = Action::parse(text);
            if action.is_none() {
                problems.push(
                    value.span().start,
                    format!(
                        "unknown action `{}` (expected approve, review, challenge or block)",
                        excerpt(text)
                    ),
                );
            }
            action.map(Some)
        }),
    };

    let mode = match field("mode") {
        None => Some(RuleMode::Active),
        Some(value) => problems.string("mode", value).and_then(|text| match text {
            "active" => Some(RuleMode::Active),
            "shadow" => Some(RuleMode::Shadow),
            _ => {
                problems.push(
                    value.span().start,
                    format!(
                        "unknown mode `{}` (expected active or shadow)",
                        excerpt(text)
                    ),
                );
                None
            }
        }),
    };

    let reason =
        match field("reason") {
            None => {
                // Without a reason, the description (else the name) is shown verbatim.
                let text = description
                    .filter(|d| !d.trim().is_empty())
                    .or(name)
                    .unwrap_or("");
                Some((template::escape(text), template::literal(text)))
            }
            Some(value) => problems
                .string("reason", value)
                .and_then(|text| match template::parse(text) {
                    Ok(parsed) => Some((text.to_owned(), parsed)),
                    Err(diags) => {
                        let map = ValueMap::new(source, value.span(), text);
                        for d in diags {
                            problems.push(map.file_offset(d.offset), d.message);
                        }
                        None
                    }
                }),
        };

    let rule = match (
        name,
        description,
        category,
        condition,
        weight,
        action,
        mode,
        reason,
    ) {
        (
            Some(name),
            Some(description),
            Some(category),
            Some((when, compiled)),
            Some(weight),
            Some(action),
            Some(mode),
            Some((reason, template)),
        ) if problems.0.is_empty() => Ok(Rule {
            name: name.to_owned(),
            description: description.to_owned(),
            category: category.to_owned(),
            weight,
            action,
            mode,
            when: when.to_owned(),
            reason,
            condition: compiled.condition,
            template,
            features: compiled.features,
        }),
        _ => {
            if problems.0.is_empty() {
                problems.push(span.start, "invalid rule");
            }
            Err(problems
                .0
                .into_iter()
                .map(|(offset, message)| error_at(source, name, offset, message))
                .collect())
        }
    };
    CheckedRule { valid_name, rule }
}

/// `[a-z0-9_-]+`.
fn valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The `score` value: a finite number from -100 to 100.
fn score(source: &str, value: &Spanned<DeValue<'_>>) -> Result<f64, String> {
    let parsed = match value.get_ref() {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|n| n as f64),
        DeValue::Float(x) => x.as_str().parse::<f64>().ok(),
        other => {
            return Err(format!(
                "`score` must be a number, found {}",
                other.type_str()
            ))
        }
    };
    match parsed {
        Some(w) if w.is_finite() && (-100.0..=100.0).contains(&w) => Ok(w),
        _ => {
            let raw = source.get(value.span()).unwrap_or("");
            Err(format!(
                "score {} is out of range: it must be a finite number from -100 to 100",
                excerpt(raw)
            ))
        }
    }
}

/// Maps byte offsets in a decoded TOML string value to byte offsets in the file.
struct ValueMap {
    /// File offset of each byte of the decoded string, then of the closing delimiter.
    offsets: Vec<usize>,
    /// Where to point when the string could not be walked (its opening quote).
    fallback: usize,
}

impl ValueMap {
    fn new(source: &str, span: Range<usize>, decoded: &str) -> ValueMap {
        let raw = source.get(span.clone()).unwrap_or("");
        let offsets = match decode(raw, span.start) {
            // Only trust the walk if it decodes exactly what the TOML parser did.
            Some((text, offsets)) if text == decoded => offsets,
            _ => Vec::new(),
        };
        ValueMap {
            offsets,
            fallback: span.start,
        }
    }

    fn file_offset(&self, offset: usize) -> usize {
        self.offsets
            .get(offset)
            .or(self.offsets.last())
            .copied()
            .unwrap_or(self.fallback)
    }
}

/// Decodes a TOML string literal as written at file offset `base`, returning the text and the
/// file offset of each of its bytes (an escape maps to its backslash).
fn decode(raw: &str, base: usize) -> Option<(String, Vec<usize>)> {
    let (delimiter, escapes) = if raw.starts_with("\"\"\"") {
        ("\"\"\"", true)
    } else if raw.starts_with("'''") {
        ("'''", false)
    } else if raw.starts_with('"') {
        ("\"", true)
    } else if raw.starts_with('\'') {
        ("'", false)
    } else {
        return None;
    };
    let multiline = delimiter.len() == 3;
    if raw.len() < 2 * delimiter.len() || !raw.ends_with(delimiter) {
        return None;
    }
    let end = raw.len() - delimiter.len();
    let mut start = delimiter.len();
    if multiline {
        // A newline right after the opening delimiter is not part of the string.
        let body = raw.get(start..end)?;
        if body.starts_with('\n') {
            start += 1;
        } else if body.starts_with("\r\n") {
            start += 2;
        }
    }
    let body = raw.get(start..end)?;
    let mut text = String::with_capacity(body.len());
    let mut offsets = Vec::with_capacity(body.len() + 1);
    let mut push = |c: char, at: usize, text: &mut String| {
        text.push(c);
        offsets.extend(std::iter::repeat_n(at, c.len_utf8()));
    };
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at = base + start + i;
        if c != '\\' || !escapes {
            push(c, at, &mut text);
            continue;
        }
        let (_, escape) = chars.next()?;
        let mut hex = |digits: usize| {
            let mut value = 0u32;
            for _ in 0..digits {
                let (_, d) = chars.next()?;
                value = value * 16 + d.to_digit(16)?;
            }
            char::from_u32(value)
        };
        let decoded = match escape {
            'b' => '\u{8}',
            't' => '\t',
            'n' => '\n',
            'f' => '\u{c}',
            'r' => '\r',
            'e' => '\u{1b}',
            '"' => '"',
            '\\' => '\\',
            'x' => hex(2)?,
            'u' => hex(4)?,
            'U' => hex(8)?,
            ' ' | '\t' | '\r' | '\n' if multiline => {
                // A line-ending backslash: trims all whitespace up to the next text.
                while chars
                    .next_if(|&(_, c)| matches!(c, ' ' | '\t' | '\r' | '\n'))
                    .is_some()
                {}
                continue;
            }
            _ => return None,
        };
        push(decoded, at, &mut text);
    }
    offsets.push(base + end);
    Some((text, offsets))
}

#[cfg(test)]
mod tests {
    use super::super::{RuleErrors, RuleSet};
    use super::*;
    use crate::features::{self, FeatureValues};

    fn load_ok(source: &str) -> Vec<Rule> {
        load(source).unwrap_or_else(|e| panic!("{}", RuleErrors(e)))
    }

    fn load_err(source: &str) -> Vec<RuleError> {
        match load(source) {
            Ok(rules) => panic!("loaded {} rules", rules.len()),
            Err(errors) => errors,
        }
    }

    /// The only error of a file, as `(rule, line, column, message)`.
    fn only_error(source: &str) -> (Option<String>, usize, usize, String) {
        let errors = load_err(source);
        assert_eq!(errors.len(), 1, "{}", RuleErrors(errors.clone()));
        let e = errors.into_iter().next().unwrap();
        (e.rule, e.line, e.column, e.message)
    }

    fn rule(body: &str) -> String {
        format!("[[rule]]\nname = \"r\"\nscore = 10\n{body}\n")
    }

    const FULL: &str = r#"
# Rules of the fraud team.
[[rule]]
name = "card_velocity"
description = "More than 3 card transactions in a minute"
category = "velocity"
when = "card.count_1m >= 3"
score = 60
action = "review"
reason = "card made {card.count_1m} transactions in the minute before this one"
mode = "shadow"

[[rule]]
name = "big-refund_2"
when = 'tx.kind == "refund" && tx.amount > 1e3'
score = -12.5
description = "A large refund"

[[rule]]
name = "night"
when = """
  tx.hour < 5 \
  && has(tx.ip)"""
score = 0
"#;

    #[test]
    fn loads_every_field_and_default() {
        let rules = load_ok(FULL);
        assert_eq!(rules.len(), 3);
        let r = &rules[0];
        assert_eq!(r.name, "card_velocity");
        assert_eq!(r.description, "More than 3 card transactions in a minute");
        assert_eq!(r.category, "velocity");
        assert_eq!(r.when, "card.count_1m >= 3");
        assert_eq!(r.weight, 60.0);
        assert_eq!(r.action, Some(Action::Review));
        assert_eq!(r.mode, RuleMode::Shadow);
        assert_eq!(
            r.reason,
            "card made {card.count_1m} transactions in the minute before this one"
        );
        assert_eq!(r.features(), ["card.count_1m"]);

        let r = &rules[1];
        assert_eq!(r.name, "big-refund_2");
        assert_eq!(r.category, "rule");
        assert_eq!(r.weight, -12.5);
        assert_eq!(r.action, None);
        assert_eq!(r.mode, RuleMode::Active);
        assert_eq!(r.reason, "A large refund");
        assert_eq!(r.features(), ["tx.kind", "tx.amount"]);

        let r = &rules[2];
        assert_eq!(r.when, "  tx.hour < 5 && has(tx.ip)");
        assert_eq!(r.reason, "night");
        assert_eq!(r.description, "");
    }

    #[test]
    fn loaded_rules_match_and_explain() {
        let rules = load_ok(FULL);
        let mut f = FeatureValues::default();
        let count = features::lookup("card.count_1m").unwrap().index;
        assert!(!rules[0].matches(&f));
        assert_eq!(
            rules[0].render_reason(&f),
            "card made n/a transactions in the minute before this one"
        );
        f.num[count] = 4.0;
        assert!(rules[0].matches(&f));
        assert_eq!(
            rules[0].render_reason(&f),
            "card made 4 transactions in the minute before this one"
        );
        assert_eq!(rules[1].render_reason(&f), "A large refund");
    }

    #[test]
    fn default_reason_keeps_braces_verbatim() {
        let rules = load_ok(&rule("when = \"true\"\ndescription = \"odd {x}\""));
        assert_eq!(rules[0].render_reason(&FeatureValues::default()), "odd {x}");
        assert_eq!(rules[0].reason, "odd {{x}}");
    }

    #[test]
    fn an_empty_file_is_an_empty_set() {
        assert!(load_ok("").is_empty());
        assert!(load_ok("# nothing yet\n").is_empty());
        assert!(load_ok("rule = []").is_empty());
        assert!(RuleSet::from_toml("").unwrap().is_empty());
    }

    #[test]
    fn locates_a_condition_error_on_line_4() {
        let source =
            "[[rule]]\nname = \"card_velocity\"\nscore = 60\nwhen = \"1 <= abs(card.cnt_1m)\"\n";
        let err = RuleSet::from_toml(source).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rule `card_velocity`, line 4, column 18: unknown feature `card.cnt_1m` \
             (did you mean `card.count_1m`?)"
        );
    }

    #[test]
    fn locates_condition_errors_through_escapes() {
        let (_, line, column, _) =
            only_error(&rule(r#"when = "tx.kind == \"a\" || card.cnt_1m > 3""#));
        assert_eq!((line, column), (4, 29));
        let (_, line, column, _) = only_error(&rule(
            r#"when = "tx.kind == \u0022a\u0022 || card.cnt_1m > 3""#,
        ));
        assert_eq!((line, column), (4, 37));
        let (_, line, column, _) =
            only_error(&rule(r#"when = "tx.kind == 'é' || card.cnt_1m > 3""#));
        assert_eq!((line, column), (4, 27));
    }

    #[test]
    fn locates_condition_errors_in_literal_and_multiline_strings() {
        let (_, line, column, _) = only_error(&rule("when = 'card.cnt_1m > 3'"));
        assert_eq!((line, column), (4, 9));
        let (_, line, column, _) =
            only_error(&rule("when = '''\ntx.amount > 1 &&\n   card.cnt_1m > 3'''"));
        assert_eq!((line, column), (6, 4));
        let (_, line, column, _) = only_error(&rule(
            "when = \"\"\"\n  tx.amount > 1 \\\n     && card.cnt_1m > 3\"\"\"",
        ));
        assert_eq!((line, column), (6, 9));
        let (_, line, column, _) =
            only_error(&rule("when = \"\"\"tx.amount >\r\n card.cnt_1m\"\"\""));
        assert_eq!((line, column), (5, 2));
    }

    #[test]
    fn locates_the_end_of_a_truncated_condition_at_the_closing_quote() {
        let (_, line, column, message) = only_error(&rule("when = \"tx.amount >\""));
        assert_eq!((line, column), (4, 20));
        assert_eq!(message, "unexpected end of condition: expected a value");
    }

    #[test]
    fn locates_a_reason_template_error() {
        let source = rule(
            "when = \"true\"\nreason = \"made {card.count_1m} payments, {tx.amout} in total\"",
        );
        let (rule_name, line, column, message) = only_error(&source);
        assert_eq!(rule_name.as_deref(), Some("r"));
        assert_eq!((line, column), (5, 43));
        assert_eq!(
            message,
            "unknown feature `tx.amout` in reason template (did you mean `tx.amount`?)"
        );
        let (_, line, column, message) = only_error(&rule("when = \"true\"\nreason = 'a {b'"));
        assert_eq!((line, column), (5, 13));
        assert!(message.starts_with("unclosed `{`"), "{message}");
    }

    #[test]
    fn rejects_a_missing_condition() {
        let (rule_name, line, column, message) =
            only_error("\n[[rule]]\nname = \"r\"\nscore = 1\n");
        assert_eq!(rule_name.as_deref(), Some("r"));
        assert_eq!((line, column), (2, 1));
        assert_eq!(
            message,
            "rule is missing `when` (the condition under which the rule fires)"
        );
    }

    #[test]
    fn rejects_a_missing_score() {
        let (_, line, column, message) = only_error("[[rule]]\nname = \"r\"\nwhen = \"true\"\n");
        assert_eq!((line, column), (1, 1));
        assert_eq!(
            message,
            "rule is missing `score` (the points it adds, from -100 to 100)"
        );
    }

    #[test]
    fn rejects_a_missing_name_without_a_rule_label() {
        let (rule_name, _, _, message) = only_error("[[rule]]\nwhen = \"true\"\nscore = 1\n");
        assert_eq!(rule_name, None);
        assert!(message.starts_with("rule is missing `name`"), "{message}");
    }

    #[test]
    fn rejects_a_bad_action() {
        let (_, line, column, message) = only_error(&rule("when = \"true\"\naction = \"deny\""));
        assert_eq!((line, column), (5, 10));
        assert_eq!(
            message,
            "unknown action `deny` (expected approve, review, challenge or block)"
        );
        for action in ["approve", "review", "challenge", "block"] {
            let rules = load_ok(&rule(&format!("when = \"true\"\naction = \"{action}\"")));
            assert_eq!(rules[0].action, Action::parse(action));
        }
    }

    #[test]
    fn rejects_a_bad_mode() {
        let (_, line, column, message) = only_error(&rule("when = \"true\"\nmode = \"off\""));
        assert_eq!((line, column), (5, 8));
        assert_eq!(message, "unknown mode `off` (expected active or shadow)");
    }

    #[test]
    fn rejects_values_of_the_wrong_type() {
        let (_, _, _, message) = only_error(&rule("when = true"));
        assert_eq!(message, "`when` must be a string, found boolean");
        let (_, _, _, message) = only_error(&rule("when = \"true\"\ncategory = 3"));
        assert_eq!(message, "`category` must be a string, found integer");
        let (_, _, _, message) = only_error(&rule("when = \"true\"\ncategory = \" \""));
        assert_eq!(message, "`category` must not be empty");
        let (_, _, _, message) =
            only_error("[[rule]]\nname = \"r\"\nscore = \"60\"\nwhen = \"true\"\n");
        assert_eq!(message, "`score` must be a number, found string");
    }

    #[test]
    fn rejects_a_duplicate_name() {
        let source = "[[rule]]\nname = \"a\"\nwhen = \"true\"\nscore = 1\n\n\
                      [[rule]]\nname = \"a\"\nwhen = \"false\"\nscore = 2\n";
        let (rule_name, line, column, message) = only_error(source);
        assert_eq!(rule_name.as_deref(), Some("a"));
        assert_eq!((line, column), (7, 8));
        assert_eq!(message, "duplicate rule name `a` (first defined on line 2)");
    }

    #[test]
    fn rejects_a_bad_name() {
        for bad in ["Card Velocity", "", "café", "a.b"] {
            let source = format!("[[rule]]\nname = \"{bad}\"\nwhen = \"true\"\nscore = 1\n");
            let (rule_name, line, column, message) = only_error(&source);
            assert_eq!(rule_name.as_deref(), Some(bad));
            assert_eq!((line, column), (2, 8));
            assert!(message.starts_with("invalid rule name"), "{message}");
        }
    }

    #[test]
    fn rejects_a_weight_out_of_range() {
        for bad in [
            "101",
            "-100.5",
            "1e3",
            "nan",
            "inf",
            "-inf",
            "99999999999999999999",
        ] {
            let source = format!("[[rule]]\nname = \"r\"\nwhen = \"true\"\nscore = {bad}\n");
            let (_, line, column, message) = only_error(&source);
            assert_eq!((line, column), (4, 9), "{bad}");
            assert_eq!(
                message,
                format!("score {bad} is out of range: it must be a finite number from -100 to 100")
            );
        }
        for (ok, weight) in [
            ("100", 100.0),
            ("-100", -100.0),
            ("0x10", 16.0),
            ("2.5e1", 25.0),
        ] {
            let source = format!("[[rule]]\nname = \"r\"\nwhen = \"true\"\nscore = {ok}\n");
            assert_eq!(load_ok(&source)[0].weight, weight, "{ok}");
        }
    }

    #[test]
    fn rejects_an_unknown_key() {
        let (_, line, column, message) = only_error(&rule("when = \"true\"\nscroe = 3"));
        assert_eq!((line, column), (5, 1));
        assert_eq!(
            message,
            "unknown key `scroe` in rule (did you mean `score`?)"
        );
        let (_, _, _, message) = only_error(&rule("when = \"true\"\nprioritee = 3"));
        assert!(
            message.starts_with("unknown key `prioritee` in rule (keys: name,"),
            "{message}"
        );
    }

    #[test]
    fn rejects_an_unknown_top_level_key() {
        let (rule_name, line, column, message) = only_error("[[rules]]\nname = \"r\"\n");
        assert_eq!(rule_name, None);
        assert_eq!((line, column), (1, 3));
        assert_eq!(
            message,
            "unknown top-level key `rules` (did you mean `rule`?): each rule goes under a \
             `[[rule]]` header"
        );
        let (_, _, _, message) = only_error("[rule]\nname = \"r\"\n");
        assert_eq!(
            message,
            "`rule` must be a list of tables, one `[[rule]]` header per rule, found table"
        );
    }

    #[test]
    fn reports_toml_syntax_errors_at_their_position() {
        let (rule_name, line, column, message) =
            only_error("[[rule]]\nname = \"r\"\nwhen = \"true\nscore = 1\n");
        assert_eq!(rule_name, None);
        assert_eq!(line, 3);
        assert!(column > 1, "{column}");
        assert!(message.starts_with("invalid TOML: "), "{message}");
        let (_, line, column, message) = only_error("[[rule]]\nname = \"r\"\nname = \"s\"\n");
        assert_eq!((line, column), (3, 1));
        assert_eq!(message, "invalid TOML: duplicate key");
    }

    #[test]
    fn rejects_too_many_rules() {
        let one = |i: usize| format!("[[rule]]\nname = \"r{i}\"\nwhen = \"true\"\nscore = 1\n");
        let at_limit: String = (0..MAX_RULES).map(one).collect();
        assert_eq!(load_ok(&at_limit).len(), MAX_RULES);
        let over: String = (0..MAX_RULES + 5).map(one).collect();
        let (rule_name, line, column, message) = only_error(&over);
        assert_eq!(rule_name, None);
        assert_eq!((line, column), (4 * MAX_RULES + 1, 1));
        assert_eq!(message, "too many rules: 1005 (at most 1000)");
    }

    #[test]
    fn rejects_an_oversized_file_before_parsing_it() {
        // A comment line of 100 bytes, repeated past the limit: valid TOML, but too much.
        let line = format!("#{}\n", "x".repeat(98));
        let big = line.repeat(MAX_SOURCE_BYTES / line.len() + 1);
        let (rule_name, line_no, column, message) = only_error(&big);
        assert_eq!(rule_name, None);
        assert_eq!((line_no, column), (MAX_SOURCE_BYTES / 100 + 1, 77));
        assert_eq!(
            message,
            format!(
                "the rule file is {} bytes long (at most 1048576)",
                big.len()
            )
        );
    }

    #[test]
    fn rejects_a_too_complex_condition() {
        let wide = vec!["tx.amount > 1"; 200].join(" || ");
        let (_, line, column, message) = only_error(&rule(&format!("when = \"{wide}\"")));
        assert_eq!(line, 4);
        // The 513th node: the `1` of the 171st comparison (3 nodes each; `||` adds none).
        assert_eq!(
            column,
            9 + 170 * "tx.amount > 1 || ".len() + "tx.amount > ".len()
        );
        assert!(message.starts_with("condition is too complex"), "{message}");
    }

    #[test]
    fn rejects_an_overlong_condition_and_template() {
        let long = format!("tx.amount > 1{}", " ".repeat(4096));
        let (_, line, column, message) = only_error(&rule(&format!("when = \"{long}\"")));
        assert_eq!((line, column), (4, 9));
        assert!(
            message.starts_with("condition is 4109 bytes long"),
            "{message}"
        );
        let long = "x".repeat(2000);
        let (_, _, _, message) =
            only_error(&rule(&format!("when = \"true\"\nreason = \"{long}\"")));
        assert_eq!(message, "reason template is 2000 bytes long (at most 1024)");
    }

    #[test]
    fn rejects_a_too_deep_condition_without_overflowing() {
        let deep = format!("{}true{}", "(".repeat(2000), ")".repeat(2000));
        let (_, line, column, message) = only_error(&rule(&format!("when = \"{deep}\"")));
        assert_eq!((line, column), (4, 9 + 64));
        assert_eq!(
            message,
            "condition is nested too deeply (at most 64 levels)"
        );
    }

    #[test]
    fn reports_every_error_of_every_rule_in_file_order() {
        let source = "[[rule]]\nname = \"first\"\nwhen = \"card.cnt_1m > 1\"\nscore = 500\n\n\
                      [[rule]]\nname = \"second\"\nwhen = \"tx.kind + 1\"\nscore = 1\nmode = \"x\"\n\n\
                      [[rule]]\nname = \"fine\"\nwhen = \"true\"\nscore = 1\n";
        let errors = load_err(source);
        let summary: Vec<(Option<&str>, usize)> =
            errors.iter().map(|e| (e.rule.as_deref(), e.line)).collect();
        assert_eq!(
            summary,
            vec![
                (Some("first"), 3),
                (Some("first"), 4),
                (Some("second"), 8),
                (Some("second"), 10),
            ]
        );
        assert_eq!(
            errors.len(),
            RuleErrors(errors.clone()).to_string().lines().count()
        );
    }

    #[test]
    fn mangled_files_give_located_errors_never_a_panic() {
        let mut mangled: Vec<String> = FULL
            .char_indices()
            .map(|(i, _)| FULL[..i].to_owned())
            .collect();
        for (i, _) in FULL.char_indices().step_by(3) {
            for junk in ["\"", "'", "{", "}", "(", "\\", "é", "\n", "[[rule]]\n"] {
                mangled.push(format!("{}{junk}{}", &FULL[..i], &FULL[i..]));
            }
        }
        for source in &mangled {
            if let Err(errors) = load(source) {
                assert!(!errors.is_empty(), "{source}");
                for e in &errors {
                    let lines = source.lines().count().max(1);
                    assert!(e.line >= 1 && e.line <= lines + 1, "{e} in {source:?}");
                    assert!(e.column >= 1, "{e} in {source:?}");
                }
            }
        }
    }

    #[test]
    fn decode_maps_every_kind_of_toml_string() {
        let (text, offsets) = decode(r#""a\tb""#, 10).unwrap();
        assert_eq!((text.as_str(), offsets), ("a\tb", vec![11, 12, 14, 15]));
        let (text, offsets) = decode("'a\\b'", 0).unwrap();
        assert_eq!((text.as_str(), offsets), ("a\\b", vec![1, 2, 3, 4]));
        let (text, offsets) = decode("\"\"\"\nab\"\"\"", 0).unwrap();
        assert_eq!((text.as_str(), offsets), ("ab", vec![4, 5, 6]));
        let (text, _) = decode("\"\\u00e9\\U0001F600\\x41\"", 0).unwrap();
        assert_eq!(text, "é😀A");
        assert_eq!(decode("\"\\q\"", 0), None);
        assert_eq!(decode("x", 0), None);
        assert_eq!(decode("\"", 0), None);
    }

    #[test]
    fn value_map_falls_back_to_the_opening_quote() {
        let source = "x = \"abc\"";
        let map = ValueMap::new(source, 4..9, "something else");
        assert_eq!(map.file_offset(2), 4);
        let map = ValueMap::new(source, 4..9, "abc");
        assert_eq!(
            (map.file_offset(0), map.file_offset(3), map.file_offset(99)),
            (5, 8, 8)
        );
    }
}
