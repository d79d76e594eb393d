//! The contracts of every event the services exchange, checked: each event type's JSON
//! schema is a snapshot (a change shows in review), today's types only add to the
//! published schemas, and events of the previous version cross both ways. The rule and
//! the list of events, producers and consumers: docs/events.md.

use serde_json::Value;
use tideway_bus::{EventType, contract};
use tideway_catalog_api as catalog;
use tideway_inventory_api as inventory;
use tideway_ordering_api as ordering;
use tideway_payment_api as payment;

/// One event type's contract: its subject, today's schema and today's reader.
struct Contract {
    subject: &'static str,
    schema: Value,
    read: fn(Value) -> Result<Value, String>,
}

fn contract<T: EventType>() -> Contract {
    Contract {
        subject: T::SUBJECT,
        schema: contract::schema_of::<T>(),
        read: |json| {
            let event = serde_json::from_value::<T>(json).map_err(|err| err.to_string())?;
            serde_json::to_value(&event).map_err(|err| err.to_string())
        },
    }
}

/// Every event type of every service.
fn all() -> Vec<Contract> {
    vec![
        contract::<ordering::OrderPlaced>(),
        contract::<ordering::OrderConfirmed>(),
        contract::<ordering::OrderCancelled>(),
        contract::<catalog::ItemCreated>(),
        contract::<catalog::ItemChanged>(),
        contract::<catalog::PriceChanged>(),
        contract::<catalog::ItemDeleted>(),
        contract::<inventory::ReserveStock>(),
        contract::<inventory::ReleaseStock>(),
        contract::<inventory::CommitStock>(),
        contract::<inventory::StockReserved>(),
        contract::<inventory::StockRejected>(),
        contract::<inventory::StockReleased>(),
        contract::<inventory::StockCommitted>(),
        contract::<inventory::StockLevelChanged>(),
        contract::<payment::AuthorizePayment>(),
        contract::<payment::CapturePayment>(),
        contract::<payment::VoidPayment>(),
        contract::<payment::PaymentAuthorized>(),
        contract::<payment::PaymentDeclined>(),
        contract::<payment::PaymentCaptured>(),
        contract::<payment::PaymentVoided>(),
    ]
}

fn pretty(schema: &Value) -> String {
    serde_json::to_string_pretty(schema).unwrap_or_default()
}

/// The published schema of `subject`: the reviewed snapshot, read as committed.
fn published(subject: &str) -> Option<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/snapshots")
        .join(format!("tideway__contracts__tests__{subject}.snap"));
    let text = std::fs::read_to_string(path).ok()?;
    // An insta snapshot: a YAML header between `---` lines, then the value.
    let body = text.splitn(3, "---\n").nth(2)?;
    serde_json::from_str(body).ok()
}

/// Previous versions of the types that have changed since they were first published,
/// as their consumers of the time read them.
mod previous {
    use serde::{Deserialize, Serialize};

    use super::ordering::OrderLine;

    /// `OrderPlaced` before it carried the buyer's email.
    #[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct OrderPlaced {
        pub order_id: String,
        pub user_id: String,
        pub lines: Vec<OrderLine>,
        pub total_minor: i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_has_a_reviewed_schema() {
        let contracts = all();
        let mut subjects: Vec<_> = contracts.iter().map(|c| c.subject).collect();
        subjects.sort_unstable();
        subjects.dedup();
        assert_eq!(subjects.len(), contracts.len(), "a subject is used twice");
        for contract in contracts {
            insta::assert_snapshot!(contract.subject, pretty(&contract.schema));
        }
    }

    #[test]
    fn todays_types_only_add_to_the_published_schemas() {
        for contract in all() {
            let Some(published) = published(contract.subject) else {
                panic!("{} has no published schema", contract.subject);
            };
            let breaks = contract::breaking_changes(&published, &contract.schema);
            assert!(
                breaks.is_empty(),
                "{} breaks its published contract (a breaking change is a new event type): {breaks:?}",
                contract.subject
            );
            for all_fields in [true, false] {
                // Today's consumers read what producers of the published version write...
                let old = contract::sample(&published, all_fields);
                if let Err(err) = (contract.read)(old.clone()) {
                    panic!("{} cannot read {old}: {err}", contract.subject);
                }
                // ...and consumers of that version read what today's producers write.
                let new = contract::sample(&contract.schema, all_fields);
                let written = (contract.read)(new).unwrap();
                if let Err(err) = contract::conforms(&written, &published) {
                    panic!("{}: {err} in {written}", contract.subject);
                }
            }
        }
    }

    #[test]
    fn events_of_the_previous_version_cross_both_ways() {
        let line = ordering::OrderLine {
            item_id: "i1".into(),
            name: "Mug".into(),
            unit_price_minor: 1200,
            quantity: 2,
        };
        // A previous producer's event, read today: the email is simply absent.
        let old = previous::OrderPlaced {
            order_id: "o1".into(),
            user_id: "u1".into(),
            lines: vec![line.clone()],
            total_minor: 2400,
        };
        let today: ordering::OrderPlaced =
            serde_json::from_value(serde_json::to_value(&old).unwrap()).unwrap();
        assert_eq!((today.order_id.as_str(), today.email), ("o1", None));
        // Today's event, read by a previous consumer: the new field is ignored.
        let new = ordering::OrderPlaced {
            order_id: "o2".into(),
            user_id: "u2".into(),
            lines: vec![line],
            total_minor: 2400,
            email: Some("a@b.c".into()),
        };
        let read: previous::OrderPlaced =
            serde_json::from_value(serde_json::to_value(&new).unwrap()).unwrap();
        assert_eq!((read.order_id.as_str(), read.total_minor), ("o2", 2400));

        assert_eq!(
            contract::breaking_changes(
                &contract::schema_of::<previous::OrderPlaced>(),
                &contract::schema_of::<ordering::OrderPlaced>(),
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_removed_field_would_be_caught_against_the_published_schema() {
        // What the check says if OrderPlaced lost a field its consumers need.
        let published = published(ordering::OrderPlaced::SUBJECT).unwrap();
        let mut changed = contract::schema_of::<ordering::OrderPlaced>();
        changed["properties"]
            .as_object_mut()
            .unwrap()
            .remove("user_id");
        assert!(
            contract::breaking_changes(&published, &changed)
                .contains(&"user_id was removed".to_owned())
        );
    }
}
