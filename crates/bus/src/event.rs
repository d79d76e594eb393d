//! The CloudEvents 1.0 envelope (JSON format) and typed payloads.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{BusError, subject};

/// The CloudEvents version this envelope follows.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of every event's data.
pub const JSON: &str = "application/json";

/// A payload type that is an event: it declares its subject, which is also its CloudEvents
/// `type` (`tideway.<service>.<event>`), and has a JSON schema, its contract with the
/// consumers (see [`crate::contract`]: a type only grows).
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize, schemars::JsonSchema)]
/// struct OrderPlaced { order_id: String }
/// impl tideway_bus::EventType for OrderPlaced {
///     const SUBJECT: &'static str = "tideway.ordering.order-placed";
/// }
/// let event = tideway_bus::Event::new(&OrderPlaced { order_id: "o1".into() }).unwrap();
/// assert_eq!(event.source, "tideway/ordering");
/// assert_eq!(event.decode::<OrderPlaced>().unwrap().order_id, "o1");
/// ```
pub trait EventType: Serialize + DeserializeOwned + schemars::JsonSchema {
    /// The subject and CloudEvents type, `tideway.<service>.<event>`.
    const SUBJECT: &'static str;
}

/// A CloudEvents 1.0 event in its JSON format, with the `traceparent` extension.
///
/// Serialised as `{"specversion":"1.0","id":…,"source":…,"type":…,"subject":…,"time":…,
/// "datacontenttype":"application/json","traceparent":…,"data":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Always `1.0`.
    pub specversion: String,
    /// A UUID v7 (time-ordered) in text form; the deduplication key everywhere.
    pub id: String,
    /// The producing service, `tideway/<service>`.
    pub source: String,
    /// The event type, which is also its subject: `tideway.<service>.<event>`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// What the event is about, such as an order id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When it happened (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The W3C trace context of the operation that emitted it (extension attribute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The payload.
    pub data: serde_json::Value,
}

impl Event {
    /// A new event carrying `payload`, with a fresh UUID v7, the current time and the source
    /// taken from the subject (`tideway.ordering.x` → `tideway/ordering`).
    pub fn new<T: EventType>(payload: &T) -> Result<Self, BusError> {
        Self::from_json(T::SUBJECT, serde_json::to_value(payload)?)
    }

    /// A new event of type `event_type` with JSON `data` (for payloads without a Rust type).
    pub fn from_json(event_type: &str, data: serde_json::Value) -> Result<Self, BusError> {
        subject::validate_subject(event_type)?;
        Ok(Self {
            specversion: SPEC_VERSION.to_owned(),
            id: Uuid::now_v7().to_string(),
            source: subject::source_of(event_type),
            event_type: event_type.to_owned(),
            subject: None,
            time: OffsetDateTime::now_utc(),
            datacontenttype: JSON.to_owned(),
            traceparent: None,
            data,
        })
    }

    /// Sets what the event is about (an order id).
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the trace context (`00-<trace id>-<span id>-<flags>`).
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Sets the source (defaults to `tideway/<service>` from the type).
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Whether this event is of type `T`.
    pub fn is<T: EventType>(&self) -> bool {
        self.event_type == T::SUBJECT
    }

    /// The payload as `T`; fails when the type differs or the data does not fit.
    pub fn decode<T: EventType>(&self) -> Result<T, BusError> {
        if !self.is::<T>() {
            return Err(BusError::WrongType {
                expected: T::SUBJECT,
                found: self.event_type.clone(),
            });
        }
        Ok(T::deserialize(&self.data)?)
    }

    /// Checks the envelope: version, non-empty id and source, a valid subject, JSON content.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.specversion != SPEC_VERSION {
            return Err(BusError::invalid(
                "event",
                format!("specversion {:?} is not {SPEC_VERSION}", self.specversion),
            ));
        }
        if self.id.is_empty() || self.source.is_empty() {
            return Err(BusError::invalid(
                "event",
                "id and source must not be empty",
            ));
        }
        if self.datacontenttype != JSON {
            return Err(BusError::invalid(
                "event",
                format!("datacontenttype {:?} is not {JSON}", self.datacontenttype),
            ));
        }
        subject::validate_subject(&self.event_type)
    }

    /// The envelope as JSON bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BusError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// An envelope from JSON bytes, validated.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BusError> {
        let event: Self = serde_json::from_slice(bytes)?;
        event.validate()?;
        Ok(event)
    }
}

/// The payload of an event on `tideway.dlq.<consumer>`: an event that `consumer` failed to
/// handle `deliveries` times, and its last error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The consumer that gave up.
    pub consumer: String,
    /// How many deliveries failed.
    pub deliveries: u32,
    /// The last handler error.
    pub error: String,
    /// The event itself.
    pub event: Event,
}

impl DeadLetter {
    /// Wraps this dead letter in an event on `tideway.dlq.<consumer>`, keeping the original
    /// event's subject and trace context.
    pub fn to_event(&self) -> Result<Event, BusError> {
        let mut event = Event::from_json(
            &subject::dead_letter(&self.consumer),
            serde_json::to_value(self)?,
        )?;
        event.subject = self.event.subject.clone();
        event.traceparent = self.event.traceparent.clone();
        Ok(event)
    }

    /// The dead letter inside an event on a `tideway.dlq.*` subject.
    pub fn from_event(event: &Event) -> Result<Self, BusError> {
        if !subject::matches(&format!("{}.dlq.*", subject::ROOT), &event.event_type) {
            return Err(BusError::WrongType {
                expected: "tideway.dlq.*",
                found: event.event_type.clone(),
            });
        }
        Ok(Self::deserialize(&event.data)?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    struct OrderPlaced {
        order_id: String,
        total_minor: i64,
    }

    impl EventType for OrderPlaced {
        const SUBJECT: &'static str = "tideway.ordering.order-placed";
    }

    #[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
    struct Other {}

    impl EventType for Other {
        const SUBJECT: &'static str = "tideway.payment.authorized";
    }

    #[test]
    fn round_trips_through_the_cloudevents_json_format() {
        let payload = OrderPlaced {
            order_id: "o-1".into(),
            total_minor: 1299,
        };
        let event = Event::new(&payload)
            .unwrap()
            .with_subject("o-1")
            .with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let json: serde_json::Value = serde_json::from_slice(&event.to_bytes().unwrap()).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "tideway.ordering.order-placed");
        assert_eq!(json["source"], "tideway/ordering");
        assert_eq!(json["subject"], "o-1");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(
            json["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(
            json["data"],
            json!({"order_id": "o-1", "total_minor": 1299})
        );
        let time = json["time"].as_str().unwrap();
        assert!(
            OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).is_ok(),
            "{time}"
        );
        let id = Uuid::parse_str(json["id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);

        let back = Event::from_bytes(&event.to_bytes().unwrap()).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.decode::<OrderPlaced>().unwrap(), payload);
        assert!(back.is::<OrderPlaced>());
        assert!(matches!(
            back.decode::<Other>(),
            Err(BusError::WrongType { .. })
        ));
    }

    #[test]
    fn optional_attributes_are_left_out_and_tolerated_when_missing() {
        let event = Event::new(&Other {}).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&event.to_bytes().unwrap()).unwrap();
        assert!(json.get("subject").is_none());
        assert!(json.get("traceparent").is_none());
        let back = Event::from_bytes(&event.to_bytes().unwrap()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn rejects_foreign_envelopes() {
        let mut event = Event::new(&Other {}).unwrap();
        event.specversion = "0.3".into();
        assert!(Event::from_bytes(&event.to_bytes().unwrap()).is_err());
        assert!(Event::from_json("orders.placed", json!({})).is_err());
        assert!(Event::from_bytes(b"{\"id\":1}").is_err());
    }

    #[test]
    fn ids_are_time_ordered() {
        let ids: Vec<String> = (0..100)
            .map(|_| Event::new(&Other {}).unwrap().id)
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn dead_letters_wrap_the_original_event() {
        let original = Event::new(&Other {}).unwrap().with_subject("o-9");
        let letter = DeadLetter {
            consumer: "inventory".into(),
            deliveries: 3,
            error: "boom".into(),
            event: original.clone(),
        };
        let event = letter.to_event().unwrap();
        assert_eq!(event.event_type, "tideway.dlq.inventory");
        assert_eq!(event.subject.as_deref(), Some("o-9"));
        assert_eq!(DeadLetter::from_event(&event).unwrap(), letter);
        assert!(DeadLetter::from_event(&original).is_err());
    }
}
