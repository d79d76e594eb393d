//! The rules for item fields, one function per field, each naming the field it refuses.

use tideway_catalog_api::{ItemUpdate, NewItem, default_currency};

use crate::error::ApiError;

/// The lowest accepted price, in minor units.
pub const MIN_PRICE: i64 = 1;
/// The highest accepted price, in minor units (one million euros).
pub const MAX_PRICE: i64 = 100_000_000;
/// The highest accepted stock level.
pub const MAX_STOCK: i64 = 1_000_000;

/// A new item whose every field passed its rule.
#[derive(Debug, Clone)]
pub struct ValidNewItem {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub brand: String,
    pub category: String,
    pub price_minor: i64,
    pub currency: String,
    pub stock: i64,
}

/// The fields an update changes, each valid.
#[derive(Debug, Clone, Default)]
pub struct ValidUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub brand: Option<String>,
    pub category: Option<String>,
    pub stock: Option<i64>,
}

/// Checks every field of `new`.
pub fn new_item(new: NewItem) -> Result<ValidNewItem, ApiError> {
    Ok(ValidNewItem {
        sku: sku(&new.sku)?,
        name: name(&new.name)?,
        description: description(&new.description)?,
        brand: brand(&new.brand)?,
        category: category(&new.category)?,
        price_minor: price(new.price_minor)?,
        currency: currency(&new.currency)?,
        stock: stock(new.stock)?,
    })
}

/// Checks every field `update` sets; an update that sets none is refused.
pub fn update(update: ItemUpdate) -> Result<ValidUpdate, ApiError> {
    let valid = ValidUpdate {
        name: update.name.as_deref().map(name).transpose()?,
        description: update.description.as_deref().map(description).transpose()?,
        brand: update.brand.as_deref().map(brand).transpose()?,
        category: update.category.as_deref().map(category).transpose()?,
        stock: update.stock.map(stock).transpose()?,
    };
    if valid.name.is_none()
        && valid.description.is_none()
        && valid.brand.is_none()
        && valid.category.is_none()
        && valid.stock.is_none()
    {
        return Err(ApiError::field(
            "body",
            "the update changes nothing: set at least one of name, description, brand, category, stock (prices change through /price)",
        ));
    }
    Ok(valid)
}

/// 3–32 characters of ASCII letters, digits and `-`.
pub fn sku(value: &str) -> Result<String, ApiError> {
    let len = value.chars().count();
    if !(3..=32).contains(&len) {
        return Err(ApiError::field("sku", "must be 3 to 32 characters long"));
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ApiError::field(
            "sku",
            "may contain only letters, digits and `-`",
        ));
    }
    Ok(value.to_owned())
}

fn line(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    let len = value.chars().count();
    if len == 0 {
        return Err(ApiError::field(field, "must not be empty"));
    }
    if len > max {
        return Err(ApiError::field(
            field,
            format!("must be at most {max} characters long"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

/// 1–120 characters, trimmed, no control characters.
pub fn name(value: &str) -> Result<String, ApiError> {
    line("name", value, 120)
}

/// 1–60 characters, trimmed, no control characters.
pub fn brand(value: &str) -> Result<String, ApiError> {
    line("brand", value, 60)
}

/// Up to 2000 characters, trimmed.
pub fn description(value: &str) -> Result<String, ApiError> {
    let value = value.trim();
    if value.chars().count() > 2000 {
        return Err(ApiError::field(
            "description",
            "must be at most 2000 characters long",
        ));
    }
    Ok(value.to_owned())
}

/// A category id's shape (whether it exists is checked against the database).
pub fn category(value: &str) -> Result<String, ApiError> {
    if value.is_empty()
        || value.len() > 60
        || !value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(ApiError::field("category", "is not a known category"));
    }
    Ok(value.to_owned())
}

/// 1 to 100,000,000 minor units.
pub fn price(value: i64) -> Result<i64, ApiError> {
    if !(MIN_PRICE..=MAX_PRICE).contains(&value) {
        return Err(ApiError::field(
            "price_minor",
            format!("must be between {MIN_PRICE} and {MAX_PRICE} minor units"),
        ));
    }
    Ok(value)
}

/// Only the shop's currency.
pub fn currency(value: &str) -> Result<String, ApiError> {
    let shop = default_currency();
    if value != shop {
        return Err(ApiError::field(
            "currency",
            format!("must be {shop}, the shop's currency"),
        ));
    }
    Ok(shop)
}

/// 0 to 1,000,000 units.
pub fn stock(value: i64) -> Result<i64, ApiError> {
    if !(0..=MAX_STOCK).contains(&value) {
        return Err(ApiError::field(
            "stock",
            format!("must be between 0 and {MAX_STOCK}"),
        ));
    }
    Ok(value)
}

/// Whether `id` can be an item id (a UUID); other ids name no item.
pub fn is_item_id(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: ApiError) -> String {
        err.problem().invalid_params[0].name.clone()
    }

    #[test]
    fn each_rule_names_its_field() {
        assert_eq!(field_of(sku("ab").unwrap_err()), "sku");
        assert_eq!(field_of(sku("ab c").unwrap_err()), "sku");
        assert!(sku("ABC-123").is_ok());
        assert_eq!(field_of(name("   ").unwrap_err()), "name");
        assert_eq!(field_of(name(&"x".repeat(121)).unwrap_err()), "name");
        assert_eq!(name(&"é".repeat(120)).unwrap(), "é".repeat(120));
        assert_eq!(field_of(brand(&"x".repeat(61)).unwrap_err()), "brand");
        assert_eq!(
            field_of(description(&"x".repeat(2001)).unwrap_err()),
            "description"
        );
        assert_eq!(description("").unwrap(), "");
        assert_eq!(field_of(price(0).unwrap_err()), "price_minor");
        assert_eq!(field_of(price(MAX_PRICE + 1).unwrap_err()), "price_minor");
        assert!(price(MAX_PRICE).is_ok() && price(1).is_ok());
        assert_eq!(field_of(stock(-1).unwrap_err()), "stock");
        assert_eq!(field_of(stock(MAX_STOCK + 1).unwrap_err()), "stock");
        assert_eq!(field_of(currency("USD").unwrap_err()), "currency");
        assert_eq!(field_of(category("Coffee").unwrap_err()), "category");
    }

    #[test]
    fn an_empty_update_is_refused() {
        let err = update(ItemUpdate::default()).unwrap_err();
        assert_eq!(err.problem().status, 422);
        assert!(
            update(ItemUpdate {
                stock: Some(3),
                ..ItemUpdate::default()
            })
            .is_ok()
        );
    }
}
