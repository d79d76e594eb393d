//! Subjects and filters: `tideway.<service>.<event>`, NATS wildcards.
//!
//! A subject is dot-separated tokens. A filter may use `*` for exactly one token and `>` as
//! its last token for one or more tokens, as NATS does, so the embedded bus matches exactly
//! what a JetStream consumer filter would.

use crate::BusError;

/// The first token of every Tideway subject.
pub const ROOT: &str = "tideway";

/// The dead-letter subject of `consumer`: `tideway.dlq.<consumer>`.
pub fn dead_letter(consumer: &str) -> String {
    format!("{ROOT}.dlq.{consumer}")
}

/// Whether `subject` (no wildcards) is matched by `filter`.
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    let mut filter_tokens = filter.split('.').peekable();
    while let Some(f) = filter_tokens.next() {
        if f == ">" && filter_tokens.peek().is_none() {
            // `>` needs at least one more token.
            return subject_tokens.next().is_some();
        }
        match subject_tokens.next() {
            Some(s) if f == "*" || f == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .chars()
            .all(|c| !c.is_whitespace() && c != '.' && c != '*' && c != '>')
}

/// Checks an event subject (an event type): `tideway.<service>.<event>[.<more>]`, no
/// wildcards, no empty tokens.
pub fn validate_subject(subject: &str) -> Result<(), BusError> {
    let tokens: Vec<&str> = subject.split('.').collect();
    if tokens.len() < 3 || tokens[0] != ROOT {
        return Err(BusError::invalid(
            "subject",
            format!("expected {ROOT}.<service>.<event>, found {subject:?}"),
        ));
    }
    if !tokens.iter().all(|t| valid_token(t)) {
        return Err(BusError::invalid(
            "subject",
            format!("{subject:?} has an empty token, a wildcard or whitespace"),
        ));
    }
    Ok(())
}

/// Checks a subscription filter: tokens or `*`, optionally ending in `>`, under `tideway`.
pub fn validate_filter(filter: &str) -> Result<(), BusError> {
    let tokens: Vec<&str> = filter.split('.').collect();
    let last = tokens.len() - 1;
    let ok = tokens.len() >= 2
        && tokens[0] == ROOT
        && tokens
            .iter()
            .enumerate()
            .all(|(i, t)| *t == "*" || (*t == ">" && i == last) || valid_token(t));
    if ok {
        Ok(())
    } else {
        Err(BusError::invalid(
            "subject filter",
            format!("expected {ROOT}.<token|*>… optionally ending in >, found {filter:?}"),
        ))
    }
}

/// Checks a consumer name: letters, digits, `-` and `_` (it names a JetStream consumer and
/// ends a dead-letter subject).
pub fn validate_consumer(consumer: &str) -> Result<(), BusError> {
    if !consumer.is_empty()
        && consumer.len() <= 64
        && consumer
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(BusError::invalid(
            "consumer name",
            format!("expected 1 to 64 letters, digits, - or _, found {consumer:?}"),
        ))
    }
}

/// The source of an event on `subject`: `tideway/<service>`.
pub(crate) fn source_of(subject: &str) -> String {
    let mut tokens = subject.split('.');
    match (tokens.next(), tokens.next()) {
        (Some(root), Some(service)) => format!("{root}/{service}"),
        _ => subject.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn literal_filters_match_only_themselves() {
        assert!(matches(
            "tideway.ordering.order-placed",
            "tideway.ordering.order-placed"
        ));
        assert!(!matches(
            "tideway.ordering.order-placed",
            "tideway.ordering.order-paid"
        ));
        assert!(!matches(
            "tideway.ordering",
            "tideway.ordering.order-placed"
        ));
        assert!(!matches(
            "tideway.ordering.order-placed.x",
            "tideway.ordering.order-placed"
        ));
    }

    #[test]
    fn star_matches_exactly_one_token() {
        assert!(matches(
            "tideway.ordering.*",
            "tideway.ordering.order-placed"
        ));
        assert!(matches(
            "tideway.*.order-placed",
            "tideway.ordering.order-placed"
        ));
        assert!(!matches("tideway.ordering.*", "tideway.ordering"));
        assert!(!matches("tideway.ordering.*", "tideway.ordering.a.b"));
        assert!(!matches("tideway.ordering.*", "tideway.payment.authorized"));
    }

    #[test]
    fn greater_than_matches_one_or_more_trailing_tokens() {
        assert!(matches("tideway.>", "tideway.ordering.order-placed"));
        assert!(matches("tideway.>", "tideway.dlq.inventory"));
        assert!(matches("tideway.ordering.>", "tideway.ordering.a.b.c"));
        assert!(!matches("tideway.>", "tideway"));
        assert!(!matches("tideway.ordering.>", "tideway.ordering"));
        assert!(!matches("tideway.>", "other.ordering.x"));
    }

    #[test]
    fn validates_subjects_filters_and_consumers() {
        assert!(validate_subject("tideway.ordering.order-placed").is_ok());
        for bad in [
            "tideway.ordering",
            "x.ordering.a",
            "tideway..a",
            "tideway.*.a",
            "tideway.a b.c",
        ] {
            assert!(validate_subject(bad).is_err(), "{bad}");
        }
        for good in [
            "tideway.>",
            "tideway.ordering.*",
            "tideway.*.order-placed",
            "tideway.dlq.inventory",
        ] {
            assert!(validate_filter(good).is_ok(), "{good}");
        }
        for bad in [
            "tideway",
            "tideway.>.x",
            "other.>",
            "tideway..x",
            "tideway.a*",
        ] {
            assert!(validate_filter(bad).is_err(), "{bad}");
        }
        assert!(validate_consumer("inventory").is_ok());
        assert!(validate_consumer("order_saga-2").is_ok());
        for bad in ["", "a.b", "a*", "a>", "a b"] {
            assert!(validate_consumer(bad).is_err(), "{bad:?}");
        }
        assert_eq!(dead_letter("inventory"), "tideway.dlq.inventory");
        assert_eq!(
            source_of("tideway.ordering.order-placed"),
            "tideway/ordering"
        );
    }

    fn token() -> impl Strategy<Value = String> {
        "[a-z0-9-]{1,6}"
    }

    fn subject() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(token(), 1..6)
    }

    proptest! {
        #[test]
        fn a_subject_matches_itself_and_every_generalisation(tokens in subject(), mask in proptest::collection::vec(any::<bool>(), 6), cut in 0usize..6) {
            let subject = format!("tideway.{}", tokens.join("."));
            prop_assert!(matches(&subject, &subject));
            // Replace any tokens by `*`: still a match.
            let starred: Vec<&str> = tokens.iter().zip(&mask).map(|(t, m)| if *m { "*" } else { t.as_str() }).collect();
            let starred_filter = format!("tideway.{}", starred.join("."));
            prop_assert!(matches(&starred_filter, &subject));
            // Cut after some tokens and end in `>`: a match while at least one token is cut.
            let cut = cut.min(tokens.len() - 1);
            let prefix: Vec<&str> = starred[..cut].to_vec();
            let gt = if prefix.is_empty() { "tideway.>".to_owned() } else { format!("tideway.{}.>", prefix.join(".")) };
            prop_assert!(matches(&gt, &subject));
            prop_assert!(validate_filter(&gt).is_ok());
            // A filter with one token more or one token fewer (no `>`) never matches.
            let longer = format!("{starred_filter}.*");
            prop_assert!(!matches(&longer, &subject));
            if tokens.len() > 1 {
                let shorter = format!("tideway.{}", starred[..tokens.len() - 1].join("."));
                prop_assert!(!matches(&shorter, &subject));
            }
        }

        #[test]
        fn a_changed_literal_token_never_matches(tokens in subject(), at in 0usize..6) {
            let subject = format!("tideway.{}", tokens.join("."));
            let at = at % tokens.len();
            let mut changed = tokens.clone();
            changed[at] = format!("{}x", changed[at]);
            let filter = format!("tideway.{}", changed.join("."));
            prop_assert!(!matches(&filter, &subject));
        }
    }
}
