//! Edits of a rule file's text that keep everything else of it: comments, blank lines, key
//! order, quoting. The dashboard flips one rule between active and shadow this way, so the
//! file an analyst wrote stays theirs after a click.
//!
//! An edit works on the spans the TOML parser reports, changes the fewest bytes it can, and is
//! checked by loading the result again: an edit that would not give exactly the asked-for rule
//! set (a rule written as an inline table, where a new line cannot go) is refused rather than
//! written.

use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use super::{RuleErrors, RuleMode};

/// Why a rule's mode could not be set in the text.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EditError {
    /// The text does not load as it is.
    #[error("the rules have errors")]
    Invalid(RuleErrors),
    /// No rule of the text has this name.
    #[error("no rule named `{0}`")]
    NoSuchRule(String),
    /// The rule is written in a way this edit cannot change in place (an inline table).
    #[error("rule `{0}` cannot be edited in place; edit its `mode` in the source")]
    NotEditable(String),
}

impl RuleMode {
    /// The word the rule file uses for this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleMode::Active => "active",
            RuleMode::Shadow => "shadow",
        }
    }
}

/// The rule file `source` with the rule named `name` set to `mode`: its `mode` value replaced,
/// or a `mode = "..."` line added under its `name` line (same indentation, same line ending).
/// The text comes back unchanged when the rule already has that mode.
pub fn set_mode(source: &str, name: &str, mode: RuleMode) -> Result<String, EditError> {
    let rules = super::file::load(source).map_err(|e| EditError::Invalid(RuleErrors(e)))?;
    match rules.iter().find(|r| r.name == name) {
        None => return Err(EditError::NoSuchRule(name.to_owned())),
        Some(rule) if rule.mode == mode => return Ok(source.to_owned()),
        Some(_) => {}
    }
    // It loaded above, so it parses; a failure here would be a parser disagreeing with itself.
    let doc = DeTable::parse(source).map_err(|_| EditError::NotEditable(name.to_owned()))?;
    let table = rule_tables(doc.get_ref())
        .iter()
        .filter_map(|t| match t.get_ref() {
            DeValue::Table(fields) => Some(fields),
            _ => None,
        })
        .find(|fields| string_field(fields, "name").is_some_and(|(n, _)| n == name))
        .ok_or_else(|| EditError::NotEditable(name.to_owned()))?;
    let quoted = format!("\"{}\"", mode.as_str());
    let edited = match field(table, "mode") {
        Some(value) => {
            let span = value.span();
            format!("{}{quoted}{}", &source[..span.start], &source[span.end..])
        }
        None => {
            let Some((_, name_span)) = string_field(table, "name") else {
                return Err(EditError::NotEditable(name.to_owned()));
            };
            insert_line_after(source, name_span.start, &format!("mode = {quoted}"))
        }
    };
    let check = super::file::load(&edited).ok();
    let as_asked = check.as_ref().is_some_and(|new| {
        new.len() == rules.len()
            && new.iter().zip(&rules).all(|(n, o)| {
                n.name == o.name && n.when == o.when && (n.mode == o.mode || n.name == name)
            })
            && new.iter().any(|r| r.name == name && r.mode == mode)
    });
    if as_asked {
        Ok(edited)
    } else {
        Err(EditError::NotEditable(name.to_owned()))
    }
}

/// The `[[rule]]` tables of a parsed file (none when `rule` is not an array of tables).
fn rule_tables<'a, 'b>(doc: &'a DeTable<'b>) -> &'a [Spanned<DeValue<'b>>] {
    doc.iter()
        .find(|(key, _)| AsRef::<str>::as_ref(key.get_ref()) == "rule")
        .and_then(|(_, value)| match value.get_ref() {
            DeValue::Array(items) => Some(&items[..]),
            _ => None,
        })
        .unwrap_or(&[])
}

fn field<'a, 'b>(table: &'a DeTable<'b>, key: &str) -> Option<&'a Spanned<DeValue<'b>>> {
    table
        .iter()
        .find(|(k, _)| AsRef::<str>::as_ref(k.get_ref()) == key)
        .map(|(_, value)| value)
}

/// A string field's value and the span of its source text.
fn string_field<'a>(
    table: &'a DeTable<'_>,
    key: &str,
) -> Option<(&'a str, std::ops::Range<usize>)> {
    let value = field(table, key)?;
    match value.get_ref() {
        DeValue::String(s) => Some((s.as_ref(), value.span())),
        _ => None,
    }
}

/// `source` with `line` inserted after the line holding byte `at`, indented like it.
fn insert_line_after(source: &str, at: usize, line: &str) -> String {
    let start = source[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent: String = source[start..]
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect();
    match source[at..].find('\n') {
        Some(i) => {
            let newline = at + i;
            let ending = if source[..newline].ends_with('\r') {
                "\r\n"
            } else {
                "\n"
            };
            let (head, tail) = source.split_at(newline + 1);
            format!("{head}{indent}{line}{ending}{tail}")
        }
        None => format!("{source}\n{indent}{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# house rules\n\n[[rule]]\nname = \"big\"   # the obvious one\nwhen = \"tx.amount > 1000\"\nscore = 90\n\n[[rule]]\n  name = 'watch'\n  when = \"tx.amount > 1\"\n  mode = 'shadow' # trial\n  score = 1\n";

    fn modes(source: &str) -> Vec<(String, RuleMode)> {
        super::super::RuleSet::from_toml(source)
            .expect("loads")
            .rules()
            .iter()
            .map(|r| (r.name.clone(), r.mode))
            .collect()
    }

    #[test]
    fn replaces_an_existing_mode_value_and_nothing_else() {
        let edited = set_mode(FILE, "watch", RuleMode::Active).expect("edit");
        assert_eq!(
            edited,
            FILE.replace("mode = 'shadow' # trial", "mode = \"active\" # trial")
        );
        assert_eq!(
            modes(&edited),
            [
                ("big".to_owned(), RuleMode::Active),
                ("watch".to_owned(), RuleMode::Active)
            ]
        );
    }

    #[test]
    fn adds_a_mode_line_under_the_name_keeping_its_comment_and_indent() {
        let edited = set_mode(FILE, "big", RuleMode::Shadow).expect("edit");
        assert_eq!(
            edited,
            FILE.replace(
                "name = \"big\"   # the obvious one\n",
                "name = \"big\"   # the obvious one\nmode = \"shadow\"\n"
            )
        );
        let indented =
            "[[rule]]\r\n    name = \"x\"\r\n    when = \"tx.amount > 1\"\r\n    score = 1";
        assert_eq!(
            set_mode(indented, "x", RuleMode::Shadow).expect("edit"),
            "[[rule]]\r\n    name = \"x\"\r\n    mode = \"shadow\"\r\n    when = \"tx.amount > 1\"\r\n    score = 1"
        );
        let last_line = "[[rule]]\nwhen = \"tx.amount > 1\"\nscore = 1\nname = \"x\"";
        assert_eq!(
            modes(&set_mode(last_line, "x", RuleMode::Shadow).expect("edit")),
            [("x".to_owned(), RuleMode::Shadow)]
        );
    }

    #[test]
    fn the_same_mode_changes_nothing() {
        assert_eq!(
            set_mode(FILE, "watch", RuleMode::Shadow),
            Ok(FILE.to_owned())
        );
    }

    #[test]
    fn refuses_unknown_rules_broken_files_and_inline_tables() {
        assert_eq!(
            set_mode(FILE, "nope", RuleMode::Shadow),
            Err(EditError::NoSuchRule("nope".into()))
        );
        assert!(matches!(
            set_mode("[[rule]]\nname = \"x\"\nwhen = \"tx.amont > 1\"\nscore = 1\n", "x", RuleMode::Shadow),
            Err(EditError::Invalid(e)) if e.0[0].line == 3
        ));
        let inline = "rule = [{ name = \"x\", when = \"tx.amount > 1\", score = 1 }]\n";
        assert_eq!(
            set_mode(inline, "x", RuleMode::Shadow),
            Err(EditError::NotEditable("x".into()))
        );
        // An inline table that already has a mode can be edited in place.
        let inline_mode =
            "rule = [{ name = \"x\", when = \"tx.amount > 1\", score = 1, mode = \"active\" }]\n";
        assert_eq!(
            modes(&set_mode(inline_mode, "x", RuleMode::Shadow).expect("edit")),
            [("x".to_owned(), RuleMode::Shadow)]
        );
    }
}
