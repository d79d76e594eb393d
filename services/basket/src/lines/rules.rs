//! The values a basket accepts.

use tideway_basket_api::MAX_QUANTITY;

use crate::error::ApiError;

/// The longest item id accepted (catalog ids are UUIDs).
const MAX_ITEM_ID_LEN: usize = 64;

/// A line quantity: 1 to [`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i64);

impl Quantity {
    /// `value` when it is a valid quantity, else a 422 naming `quantity`.
    pub fn parse(value: i64) -> Result<Self, ApiError> {
        if (1..=MAX_QUANTITY).contains(&value) {
            Ok(Self(value))
        } else {
            Err(ApiError::invalid(
                "quantity",
                format!("must be between 1 and {MAX_QUANTITY}"),
            ))
        }
    }

    /// The number of units.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// The refusal of a line that would grow past [`MAX_QUANTITY`].
pub fn line_too_large(resulting: i64) -> ApiError {
    ApiError::invalid(
        "quantity",
        format!("the line would hold {resulting}; at most {MAX_QUANTITY} of one item"),
    )
}

/// An item id as sent by a client; whether the catalog knows it is checked separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemId(String);

impl ItemId {
    /// `value` when it can be an item id, else a 422 naming `item_id`.
    pub fn parse(value: String) -> Result<Self, ApiError> {
        if value.trim().is_empty() {
            return Err(ApiError::invalid("item_id", "must not be empty"));
        }
        if value.len() > MAX_ITEM_ID_LEN {
            return Err(ApiError::invalid(
                "item_id",
                format!("must be at most {MAX_ITEM_ID_LEN} characters"),
            ));
        }
        Ok(Self(value))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(err: ApiError) -> &'static str {
        match err {
            ApiError::Invalid { field, .. } => field,
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn quantities_are_one_to_ninety_nine() {
        assert_eq!(Quantity::parse(1).unwrap().get(), 1);
        assert_eq!(Quantity::parse(99).unwrap().get(), 99);
        for bad in [0, -1, 100, i64::MAX, i64::MIN] {
            assert_eq!(
                field(Quantity::parse(bad).unwrap_err()),
                "quantity",
                "{bad}"
            );
        }
    }

    #[test]
    fn item_ids_are_short_and_not_blank() {
        assert_eq!(ItemId::parse("abc".into()).unwrap().as_str(), "abc");
        assert_eq!(field(ItemId::parse(String::new()).unwrap_err()), "item_id");
        assert_eq!(field(ItemId::parse("  ".into()).unwrap_err()), "item_id");
        assert_eq!(field(ItemId::parse("x".repeat(65)).unwrap_err()), "item_id");
    }
}
