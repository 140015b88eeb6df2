//! An alert in words, for people: the one-line headline that heads a Slack message and a
//! mail's subject, the Slack text, and the plain-text mail body (one alert, or a digest).
//!
//! Only what the alert already carries appears: account ids (a card appears only as its
//! token), amounts, reasons. Nothing here reads the store.

use std::fmt::Write;

use ringfence_core::decision::Action;

use super::AlertEvent;

/// `block: ring alert on u-17 (score 95)`.
pub fn headline(a: &AlertEvent) -> String {
    format!(
        "{}: {} alert on {} (score {:.0})",
        a.decision.as_str(),
        a.channel_type(),
        a.sender_account_id,
        a.score
    )
}

/// `120.00 (GB)`: the amount, with the country when known.
fn amount(a: &AlertEvent) -> String {
    match &a.region {
        Some(r) => format!("{:.2} ({r})", a.amount),
        None => format!("{:.2}", a.amount),
    }
}

/// Slack's three reserved characters, escaped as its mrkdwn wants.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The `text` of a Slack message: one line with the headline, amount and transaction, then
/// the reasons, and a link to the case when the dashboard's address is known.
pub fn slack(a: &AlertEvent, link: Option<&str>) -> String {
    let mut s = format!(
        "*Ringfence {}* · amount {} · transaction `{}`",
        slack_escape(&headline(a)),
        slack_escape(&amount(a)),
        slack_escape(&a.transaction_id)
    );
    if !a.reasons.is_empty() {
        let reasons: Vec<String> = a.reasons.iter().map(|r| slack_escape(r)).collect();
        let _ = write!(s, "\nReasons: {}", reasons.join("; "));
    }
    if let Some(link) = link {
        let _ = write!(s, "\n<{}|Open in Ringfence>", slack_escape(link));
    }
    s
}

/// Subject of a mail about one alert: `[Ringfence] block: ring alert on u-17 (score 95)`.
pub fn subject(a: &AlertEvent) -> String {
    format!("[Ringfence] {}", headline(a))
}

/// Subject of a digest of `by_decision` alerts (counts indexed by [`Action`]):
/// `[Ringfence] 37 alerts: 12 block, 25 review`.
pub fn digest_subject(by_decision: [usize; 4]) -> String {
    let parts: Vec<String> = Action::ALL
        .iter()
        .rev()
        .filter(|d| by_decision[**d as usize] > 0)
        .map(|d| format!("{} {}", by_decision[*d as usize], d.as_str()))
        .collect();
    let total: usize = by_decision.iter().sum();
    format!("[Ringfence] {total} alerts: {}", parts.join(", "))
}

/// One alert's block in a mail body.
fn alert_block(out: &mut String, a: &AlertEvent, link: Option<&str>) {
    let _ = writeln!(out, "{}", headline(a));
    let _ = writeln!(out, "  Transaction: {}", a.transaction_id);
    let _ = writeln!(out, "  Time:        {}", a.alert_timestamp);
    let _ = writeln!(out, "  Amount:      {}", amount(a));
    let _ = writeln!(out, "  Account:     {}", a.sender_account_id);
    let _ = writeln!(
        out,
        "  Activity:    {} transaction(s) in the last hour, {} alert(s) in the escalation window",
        a.velocity_count, a.alert_count
    );
    if a.reasons.is_empty() {
        let _ = writeln!(out, "  Reasons:     the total score");
    } else {
        let _ = writeln!(out, "  Reasons:");
        for r in &a.reasons {
            let _ = writeln!(out, "    - {r}");
        }
    }
    if let Some(link) = link {
        let _ = writeln!(out, "  Case:        {link}");
    }
}

/// Plain-text body of a mail: each alert with its link (when known), and for a digest how
/// many more were raised than listed.
pub fn mail_body(alerts: &[(AlertEvent, Option<String>)], omitted: usize) -> String {
    let mut out = String::new();
    if alerts.len() + omitted > 1 {
        let _ = writeln!(
            out,
            "Ringfence raised {} alerts since its last mail (at most one mail is sent per interval).\n",
            alerts.len() + omitted
        );
    }
    for (i, (a, link)) in alerts.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        alert_block(&mut out, a, link.as_deref());
    }
    if omitted > 0 {
        let _ = writeln!(
            out,
            "\n... and {omitted} more alert(s) not listed here: see the alert queue in the dashboard."
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(decision: Action) -> AlertEvent {
        AlertEvent {
            sender_account_id: "u-17".into(),
            velocity_count: 3,
            alert_count: 2,
            amount: 120.0,
            region: Some("GB".into()),
            alert_timestamp: "2025-01-01T00:00:00Z".into(),
            alert_time_ms: 0,
            log_position: None,
            alert_type: "ring".into(),
            transaction_id: "t<1>".into(),
            decision,
            score: 95.4,
            reasons: vec!["device shared by 3 users & 2 cards".into()],
        }
    }

    #[test]
    fn headline_subject_and_slack_read_well() {
        let a = alert(Action::Block);
        assert_eq!(
            subject(&a),
            "[Ringfence] block: ring alert on u-17 (score 95)"
        );
        let s = slack(&a, Some("https://rf.example/#/alerts/4"));
        assert!(
            s.starts_with("*Ringfence block: ring alert on u-17 (score 95)*"),
            "{s}"
        );
        assert!(s.contains("`t&lt;1&gt;`"), "{s}");
        assert!(s.contains("3 users &amp; 2 cards"), "{s}");
        assert!(
            s.ends_with("<https://rf.example/#/alerts/4|Open in Ringfence>"),
            "{s}"
        );
        assert_eq!(
            digest_subject([0, 1, 0, 2]),
            "[Ringfence] 3 alerts: 2 block, 1 review"
        );
    }
}
