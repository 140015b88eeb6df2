//! Reason templates: text with `{feature.name}` placeholders, checked against the catalog at
//! load time and rendered per decision. `{{` and `}}` write literal braces.

use std::fmt::Write;

use super::{excerpt, suggestion, Diag, MAX_TEMPLATE_BYTES};
use crate::features::{self, FeatureDef, FeatureType, FeatureValues};

/// A parsed reason template.
#[derive(Clone, Debug)]
pub(super) struct Template {
    parts: Box<[Part]>,
}

#[derive(Clone, Debug)]
enum Part {
    Text(Box<str>),
    Feature(&'static FeatureDef),
}

/// Parses a template, reporting every bad placeholder.
pub(super) fn parse(source: &str) -> Result<Template, Vec<Diag>> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(vec![Diag::new(
            0,
            format!(
                "reason template is {} bytes long (at most {MAX_TEMPLATE_BYTES})",
                source.len()
            ),
        )]);
    }
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut diags = Vec::new();
    let mut chars = source.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '{' if chars.peek().is_some_and(|&(_, next)| next == '{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek().is_some_and(|&(_, next)| next == '}') => {
                chars.next();
                text.push('}');
            }
            '}' => diags.push(Diag::new(
                at,
                "unmatched `}` in reason template (write `}}` for a literal brace)",
            )),
            '{' => {
                let body_start = at + 1;
                let rest = source.get(body_start..).unwrap_or("");
                let Some(len) = rest
                    .find(['}', '{'])
                    .filter(|&i| rest[i..].starts_with('}'))
                else {
                    diags.push(Diag::new(
                        at,
                        "unclosed `{` in reason template (write `{{` for a literal brace)",
                    ));
                    // Keep scanning after it: later placeholders may have errors of their own.
                    continue;
                };
                let body = &rest[..len];
                let name = body.trim();
                let name_at = body_start + (body.len() - body.trim_start().len());
                if name.is_empty() {
                    diags.push(Diag::new(
                        at,
                        "empty placeholder `{}` in reason template (write `{{}}` for literal braces)",
                    ));
                } else if let Some(def) = features::lookup(name) {
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text).into()));
                    }
                    parts.push(Part::Feature(def));
                } else {
                    let hint = suggestion(name, features::all().map(|d| d.name));
                    diags.push(Diag::new(
                        name_at,
                        format!(
                            "unknown feature `{}` in reason template{hint}",
                            excerpt(name)
                        ),
                    ));
                }
                // Skip the body and its closing brace.
                while chars.next_if(|&(i, _)| i <= body_start + len).is_some() {}
            }
            c => text.push(c),
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    if !text.is_empty() {
        parts.push(Part::Text(text.into()));
    }
    Ok(Template {
        parts: parts.into(),
    })
}

/// A template that renders `text` verbatim (braces included).
pub(super) fn literal(text: &str) -> Template {
    Template {
        parts: Box::new([Part::Text(text.into())]),
    }
}

/// The template source that renders `text` verbatim: braces doubled.
pub(super) fn escape(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

impl Template {
    /// The text with every placeholder replaced by its value.
    pub(super) fn render(&self, f: &FeatureValues<'_>) -> String {
        let mut out = String::new();
        for part in self.parts.iter() {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Feature(def) => write_value(&mut out, def, f),
            }
        }
        out
    }
}

/// Writes one feature value: `n/a` when missing.
fn write_value(out: &mut String, def: &FeatureDef, f: &FeatureValues<'_>) {
    match def.ty {
        FeatureType::Text => {
            out.push_str(f.text.get(def.index).copied().flatten().unwrap_or("n/a"))
        }
        FeatureType::Bool => {
            let v = f.num.get(def.index).copied().unwrap_or(f64::NAN);
            out.push_str(match v {
                v if v.is_nan() => "n/a",
                v if v != 0.0 => "true",
                _ => "false",
            });
        }
        FeatureType::Number => {
            let v = f.num.get(def.index).copied().unwrap_or(f64::NAN);
            if v.is_nan() {
                out.push_str("n/a");
            } else {
                write_number(out, v);
            }
        }
    }
}

/// A number as reasons show it: integers without decimals, others with at most 2.
pub fn format_number(v: f64) -> String {
    let mut s = String::new();
    write_number(&mut s, v);
    s
}

/// Integers without decimals (`3`), other numbers with at most 2 (`152.5`, `0.33`).
fn write_number(out: &mut String, v: f64) {
    // Writing to a String cannot fail.
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
        return;
    }
    let start = out.len();
    let _ = write!(out, "{v:.2}");
    if out[start..].contains('.') {
        let kept = out.trim_end_matches('0').trim_end_matches('.').len();
        out.truncate(kept);
    }
    if &out[start..] == "-0" {
        out.truncate(start);
        out.push('0');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> FeatureValues<'static> {
        let mut f = FeatureValues::default();
        let set = |f: &mut FeatureValues<'static>, name: &str, v: f64| {
            f.num[features::lookup(name).unwrap().index] = v;
        };
        set(&mut f, "card.count_1m", 3.0);
        set(&mut f, "tx.amount", 152.5);
        set(&mut f, "card.amount_ratio", 1.0 / 3.0);
        set(&mut f, "ring.has_fraud", 1.0);
        set(&mut f, "user.new_device", 0.0);
        f.text[features::lookup("tx.kind").unwrap().index] = Some("refund");
        f
    }

    fn render(source: &str) -> String {
        parse(source).unwrap().render(&values())
    }

    fn number(v: f64) -> String {
        let mut out = String::new();
        write_number(&mut out, v);
        out
    }

    #[test]
    fn renders_placeholders_by_type() {
        assert_eq!(
            render("card made {card.count_1m} transactions"),
            "card made 3 transactions"
        );
        assert_eq!(
            render("{tx.amount} is {card.amount_ratio}x"),
            "152.5 is 0.33x"
        );
        assert_eq!(
            render("fraud={ring.has_fraud} new={user.new_device}"),
            "fraud=true new=false"
        );
        assert_eq!(render("kind {tx.kind}"), "kind refund");
        assert_eq!(render("{ tx.kind }"), "refund");
        assert_eq!(render("plain text"), "plain text");
        assert_eq!(render(""), "");
    }

    #[test]
    fn renders_missing_values_as_na() {
        let t = parse("{card.sum_1m} {tx.merchant} {ring.users} {user.new_merchant}").unwrap();
        assert_eq!(t.render(&FeatureValues::default()), "n/a n/a n/a n/a");
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(-3.0), "-3");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(-0.0), "0");
        assert_eq!(number(152.5), "152.5");
        assert_eq!(number(152.50001), "152.5");
        assert_eq!(number(0.333), "0.33");
        assert_eq!(number(2.999), "3");
        assert_eq!(number(-1.25), "-1.25");
        assert_eq!(number(-0.001), "0");
        assert_eq!(number(1e20), "100000000000000000000");
        assert_eq!(number(f64::INFINITY), "inf");
    }

    #[test]
    fn doubled_braces_are_literal() {
        assert_eq!(
            render("{{card.count_1m}} = {card.count_1m}"),
            "{card.count_1m} = 3"
        );
        assert_eq!(render("}}{{"), "}{");
    }

    #[test]
    fn rejects_an_unknown_placeholder_at_its_name() {
        assert_eq!(
            parse("made {card.cnt_1m} transactions").unwrap_err(),
            vec![Diag::new(
                6,
                "unknown feature `card.cnt_1m` in reason template (did you mean `card.count_1m`?)"
            )]
        );
        assert_eq!(parse("x {  nope }").unwrap_err()[0].offset, 5);
    }

    #[test]
    fn rejects_unclosed_and_unmatched_braces() {
        assert_eq!(
            parse("made {card.count_1m transactions").unwrap_err(),
            vec![Diag::new(
                5,
                "unclosed `{` in reason template (write `{{` for a literal brace)"
            )]
        );
        assert_eq!(parse("a {b {tx.kind}").unwrap_err()[0].offset, 2);
        assert_eq!(
            parse("a } b").unwrap_err(),
            vec![Diag::new(
                2,
                "unmatched `}` in reason template (write `}}` for a literal brace)"
            )]
        );
        assert_eq!(
            parse("{}").unwrap_err()[0].message,
            "empty placeholder `{}` in reason template (write `{{}}` for literal braces)"
        );
    }

    #[test]
    fn reports_every_bad_placeholder() {
        let offsets: Vec<usize> = parse("{a} {tx.kind} {b} } {")
            .unwrap_err()
            .iter()
            .map(|d| d.offset)
            .collect();
        assert_eq!(offsets, vec![1, 15, 18, 20]);
    }

    #[test]
    fn rejects_an_overlong_template() {
        let long = "x".repeat(MAX_TEMPLATE_BYTES + 1);
        let diags = parse(&long).unwrap_err();
        assert_eq!(
            diags,
            vec![Diag::new(
                0,
                "reason template is 1025 bytes long (at most 1024)"
            )]
        );
        assert!(parse(&"x".repeat(MAX_TEMPLATE_BYTES)).is_ok());
    }

    #[test]
    fn literal_and_escape_render_text_verbatim() {
        let text = "odd {braces} here";
        assert_eq!(literal(text).render(&values()), text);
        assert_eq!(parse(&escape(text)).unwrap().render(&values()), text);
        assert_eq!(escape("a{b}c"), "a{{b}}c");
    }
}
