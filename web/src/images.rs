//! Item pictures, generated: an SVG per item, its colours and shapes drawn from a hash of
//! the item's id and its category, its name written on it. Nothing is fetched from
//! elsewhere; the answer is cached by browsers (a day) and revalidated by ETag.

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use maud::html;
use sha2::{Digest, Sha256};
use tideway_catalog_api::Item;

use crate::{AppState, assets, error::PageError};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/images/items/{file}", get(item_image))
}

/// The address of an item's picture.
pub(crate) fn item_image_url(item: &Item) -> String {
    format!("/images/items/{}.svg", crate::api::segment(&item.id))
}

async fn item_image(
    State(state): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let not_found = || PageError::NotFound("this picture".to_owned());
    let id = file.strip_suffix(".svg").ok_or_else(not_found)?;
    let item = state
        .api
        .catalog
        .item(id)
        .await
        .map_err(|err| PageError::from_client(err, "/"))?
        .ok_or_else(not_found)?;
    let svg = render(&item);
    let tag = assets::etag(svg.as_bytes());
    let mut response = if assets::matches(&headers, &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            )],
            svg,
        )
            .into_response()
    };
    let out = response.headers_mut();
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    if let Ok(value) = HeaderValue::from_str(&tag) {
        out.insert(header::ETAG, value);
    }
    Ok(response)
}

/// The picture of `item`.
pub(crate) fn render(item: &Item) -> String {
    let digest = Sha256::digest(item.id.as_bytes());
    let byte = |i: usize| u32::from(digest[i % digest.len()]);
    let hue = category_hue(&item.category) + byte(0) % 40;
    let hue2 = (hue + 25 + byte(1) % 40) % 360;
    let background = format!("hsl({hue} 55% 88%)");
    let background2 = format!("hsl({hue2} 60% 78%)");
    let ink = format!("hsl({hue} 45% 28%)");
    let accent = format!("hsl({hue2} 55% 45%)");
    let shapes: Vec<(u32, u32, u32, f32)> = (0..5)
        .map(|i| {
            (
                40 + byte(2 + i * 3) * 320 / 255,
                30 + byte(3 + i * 3) * 170 / 255,
                18 + byte(4 + i * 3) % 46,
                0.25 + f32::from(digest[(5 + i * 3) % 32] % 40) / 100.0,
            )
        })
        .collect();
    let gradient = format!("g{}", hex(&digest[..4]));
    let initials: String = item
        .name
        .split_whitespace()
        .filter_map(|w| w.chars().next())
        .filter(|c| c.is_alphanumeric())
        .take(2)
        .collect::<String>()
        .to_uppercase();
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 300" role="img"
            aria-label=(format!("Picture of {}", item.name)) {
            defs {
                linearGradient id=(gradient) x1="0" y1="0" x2="1" y2="1" {
                    stop offset="0" stop-color=(background) {}
                    stop offset="1" stop-color=(background2) {}
                }
            }
            rect width="400" height="300" fill=(format!("url(#{gradient})")) {}
            @for (x, y, r, opacity) in &shapes {
                circle cx=(x) cy=(y) r=(r) fill=(accent) fill-opacity=(format!("{opacity:.2}")) {}
            }
            path d=(format!("M0 {} C 100 {}, 300 {}, 400 {} L400 300 L0 300 Z",
                210 + byte(20) % 30, 170 + byte(21) % 40, 250 + byte(22) % 30, 200 + byte(23) % 30))
                fill=(ink) fill-opacity="0.15" {}
            circle cx="200" cy="130" r="58" fill="white" fill-opacity="0.85" {}
            text x="200" y="150" text-anchor="middle" font-family="system-ui, sans-serif"
                font-size="52" font-weight="700" fill=(ink) { (initials) }
            text x="200" y="270" text-anchor="middle" font-family="system-ui, sans-serif"
                font-size="20" font-weight="600" fill=(ink) { (item.brand) }
        }
    }
    .into_string()
}

fn category_hue(category: &str) -> u32 {
    let digest = Sha256::digest(category.as_bytes());
    u32::from(u16::from_be_bytes([digest[0], digest[1]])) % 360
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, name: &str) -> Item {
        Item {
            id: id.into(),
            sku: "SKU".into(),
            name: name.into(),
            description: String::new(),
            brand: "Acme & Co".into(),
            category: "coffee".into(),
            price_minor: 100,
            currency: "EUR".into(),
            stock: 1,
            sold_out: false,
            version: 1,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn the_same_item_gets_the_same_picture_and_others_differ() {
        let a = render(&item("a", "House Blend"));
        assert_eq!(a, render(&item("a", "House Blend")));
        assert_ne!(a, render(&item("b", "House Blend")));
        assert!(a.starts_with("<svg"));
        assert!(a.contains(">HB<"), "{a}");
        // Served as image/svg+xml, it must be XML: no HTML-style void elements.
        for element in ["stop", "rect", "circle", "path"] {
            let opened = a.matches(&format!("<{element} ")).count();
            assert!(opened > 0, "no {element} in {a}");
            assert_eq!(
                opened,
                a.matches(&format!("</{element}>")).count(),
                "{element} unclosed"
            );
        }
    }

    #[test]
    fn text_is_escaped() {
        let svg = render(&item("x", "<script>"));
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("Acme &amp; Co"));
    }
}
