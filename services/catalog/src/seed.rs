//! The demo catalog a fresh shop starts with, and the categories every shop has.
//!
//! Seeding is idempotent and safe when several replicas start at once: every row is
//! inserted with `ON CONFLICT DO NOTHING` on its unique keys (category id, item SKU and an
//! item id derived from the SKU), so two builds racing on one database end with one copy.

use sha2::{Digest, Sha256};
use tideway_store::Db;

use crate::time::now;

/// A category of the shop.
#[derive(Debug, Clone, Copy)]
pub struct SeedCategory {
    /// The slug id.
    pub id: &'static str,
    /// The display name.
    pub name: &'static str,
}

/// A demo item.
#[derive(Debug, Clone, Copy)]
pub struct SeedItem {
    /// Its SKU (the unique key seeding relies on).
    pub sku: &'static str,
    /// The name.
    pub name: &'static str,
    /// The brand.
    pub brand: &'static str,
    /// The category id.
    pub category: &'static str,
    /// The price in euro cents.
    pub price_minor: i64,
    /// Units in stock.
    pub stock: i64,
    /// One or two sentences.
    pub description: &'static str,
}

/// The shop's categories, in display order.
#[rustfmt::skip]
pub const CATEGORIES: &[SeedCategory] = &[
    SeedCategory { id: "coffee", name: "Coffee" },
    SeedCategory { id: "tea", name: "Tea" },
    SeedCategory { id: "kitchen", name: "Kitchen" },
    SeedCategory { id: "books", name: "Books" },
    SeedCategory { id: "outdoor", name: "Outdoor" },
    SeedCategory { id: "audio", name: "Audio" },
];

const fn item(
    sku: &'static str,
    name: &'static str,
    brand: &'static str,
    category: &'static str,
    price_minor: i64,
    stock: i64,
    description: &'static str,
) -> SeedItem {
    SeedItem {
        sku,
        name,
        brand,
        category,
        price_minor,
        stock,
        description,
    }
}

/// The demo catalog.
#[rustfmt::skip]
pub const ITEMS: &[SeedItem] = &[
    // coffee
    item("COF-ETH-YIRG", "Ethiopia Yirgacheffe Whole Beans 250g", "Tidal Roasters", "coffee", 1450, 120, "A washed heirloom coffee with notes of jasmine, bergamot and lemon curd. Roasted light for filter brewing."),
    item("COF-COL-HUIL", "Colombia Huila Whole Beans 250g", "Tidal Roasters", "coffee", 1290, 85, "Caramel sweetness and red apple acidity from smallholder farms in Huila. Works as filter or espresso."),
    item("COF-BRA-SANT", "Brazil Santos Espresso Blend 1kg", "Porto Fino Caffe", "coffee", 2890, 60, "A chocolatey, low-acid espresso blend with a thick crema. Made for milk drinks."),
    item("COF-KEN-AA", "Kenya AA Nyeri Whole Beans 250g", "Tidal Roasters", "coffee", 1690, 4, "Blackcurrant, tomato leaf and a syrupy body. A small lot that sells out every season."),
    item("COF-GUA-ANTI", "Guatemala Antigua Ground Coffee 500g", "Porto Fino Caffe", "coffee", 1590, 140, "Medium roast with cocoa and toasted almond notes, ground for drip machines."),
    item("COF-DECAF-MX", "Mexico Decaf Swiss Water 250g", "Bergwerk Kaffee", "coffee", 1390, 45, "Decaffeinated without solvents, keeping its milk chocolate and hazelnut flavour."),
    item("COF-SUMA-MAN", "Sumatra Mandheling Dark Roast 250g", "Bergwerk Kaffee", "coffee", 1350, 0, "Earthy and full-bodied with cedar and dark chocolate. A classic dark roast."),
    item("COF-COLD-BRW", "Cold Brew Coarse Grind 1kg", "Porto Fino Caffe", "coffee", 2490, 32, "A coarse grind blended for cold brewing: steep overnight for a smooth, sweet concentrate."),
    item("COF-PODS-40", "Espresso Capsules Intenso 40 pack", "Porto Fino Caffe", "coffee", 1199, 200, "Aluminium capsules compatible with common espresso machines. Intensity 10 of 12."),
    item("COF-RWA-NYA", "Rwanda Nyamasheke Natural 250g", "Tidal Roasters", "coffee", 1790, 2, "A natural process lot bursting with strawberry and hibiscus. Limited stock."),
    item("COF-HOUSE-1K", "House Blend Whole Beans 1kg", "Bergwerk Kaffee", "coffee", 2290, 175, "Our everyday blend of Brazilian and Honduran beans, balanced and nutty."),
    // tea
    item("TEA-SENCHA-100", "Japanese Sencha 100g", "Kumo Tea House", "tea", 1250, 90, "Steamed green tea from Shizuoka with a grassy sweetness and a clean finish."),
    item("TEA-MATCHA-30", "Ceremonial Matcha 30g", "Kumo Tea House", "tea", 2400, 25, "Stone-ground first-harvest tencha from Uji. Whisk it thin as usucha or enjoy it in a latte."),
    item("TEA-ASSAM-250", "Assam Breakfast Loose Leaf 250g", "Darjee & Co", "tea", 990, 150, "Malty, brisk and strong enough for milk. The morning cup of choice."),
    item("TEA-EARL-125", "Earl Grey Blue Flower 125g", "Darjee & Co", "tea", 1090, 70, "Black tea scented with Calabrian bergamot and cornflower petals."),
    item("TEA-DARJ-FF", "Darjeeling First Flush 100g", "Darjee & Co", "tea", 1990, 3, "Light and floral with the muscatel note of the spring harvest. Very limited."),
    item("TEA-ROOI-200", "Rooibos Vanilla 200g", "Savanna Leaf", "tea", 890, 110, "Caffeine-free red bush tea with natural vanilla pieces. Good hot or iced."),
    item("TEA-OOLONG-TGY", "Tie Guan Yin Oolong 100g", "Kumo Tea House", "tea", 1690, 40, "A lightly oxidised rolled oolong with orchid aroma that unfolds over many infusions."),
    item("TEA-CHAI-MIX", "Masala Chai Spice Blend 200g", "Savanna Leaf", "tea", 1150, 0, "Assam tea with cardamom, ginger, cinnamon and clove, ready to simmer with milk."),
    item("TEA-PEPP-50", "Organic Peppermint 50 bags", "Savanna Leaf", "tea", 650, 130, "Whole peppermint leaves in plastic-free bags. Refreshing after a meal."),
    item("TEA-PUER-357", "Aged Pu-erh Cake 357g", "Kumo Tea House", "tea", 4900, 8, "A pressed ripe pu-erh aged for six years, earthy and smooth with a long finish."),
    item("TEA-CHAM-40", "Chamomile Flowers 40g", "Savanna Leaf", "tea", 590, 95, "Whole Egyptian chamomile blossoms for a calm evening cup."),
    // kitchen
    item("KIT-AERO-PRS", "AeroPress Coffee Maker", "Aerobie", "kitchen", 3999, 55, "A light, unbreakable press that brews smooth coffee in a minute. Travels well."),
    item("KIT-V60-02", "V60 Ceramic Dripper Size 02", "Hario", "kitchen", 2450, 38, "The classic cone dripper with spiral ribs for a clean, bright cup."),
    item("KIT-GRIND-HND", "Hand Grinder with Steel Burrs", "Timemore", "kitchen", 8900, 12, "Stepped steel burrs give a consistent grind from espresso to French press."),
    item("KIT-KETTLE-GN", "Gooseneck Kettle 1L", "Fellow", "kitchen", 7450, 1, "A precise pour spout and a built-in thermometer for pour-over brewing."),
    item("KIT-SCALE-01", "Coffee Scale with Timer", "Hario", "kitchen", 4990, 0, "Weighs to 0.1 g and times your brew. Runs on two AAA batteries."),
    item("KIT-FRENCH-8", "French Press 8 Cup", "Bodum", "kitchen", 3290, 64, "A borosilicate glass press with a stainless steel frame and mesh filter."),
    item("KIT-MOKA-6", "Moka Pot 6 Cup", "Bialetti", "kitchen", 3490, 47, "The Italian stovetop classic in cast aluminium. Strong, rich coffee on any hob."),
    item("KIT-MILK-FRTH", "Electric Milk Frother", "Bodum", "kitchen", 2990, 29, "Whisks hot or cold milk foam at the press of a button."),
    item("KIT-MUG-SET4", "Stoneware Mug Set of 4", "Tideway Home", "kitchen", 3600, 80, "Hand-glazed mugs holding 300 ml each, dishwasher safe."),
    item("KIT-TEAPOT-CI", "Cast Iron Teapot 0.8L", "Iwachu", "kitchen", 6990, 14, "Enamelled inside and finished by hand in Morioka. Keeps tea warm for long."),
    item("KIT-FILTER-100", "Paper Filters Size 02, 100 pack", "Hario", "kitchen", 590, 190, "Oxygen-bleached paper filters for cone drippers."),
    // books
    item("BOOK-WCOFFEE", "The World Atlas of Coffee", "Mitchell Beazley", "books", 3200, 22, "From bean to brew: the countries, varieties and methods behind great coffee."),
    item("BOOK-TEABOOK", "The Tea Book", "DK Publishing", "books", 2200, 35, "A visual guide to varieties, blends and brewing rituals from around the world."),
    item("BOOK-DDIA", "Designing Data-Intensive Applications", "O'Reilly Media", "books", 4990, 18, "The big ideas behind reliable, scalable and maintainable systems. A modern classic."),
    item("BOOK-RUSTLANG", "The Rust Programming Language", "No Starch Press", "books", 3990, 26, "The official book on Rust, covering ownership, traits, concurrency and more."),
    item("BOOK-MICROSV", "Building Microservices", "O'Reilly Media", "books", 4590, 9, "How to model, integrate, test, deploy and monitor a system of small services."),
    item("BOOK-ZERO2PRD", "Zero To Production In Rust", "Independent", "books", 3900, 0, "An opinionated introduction to backend development in Rust, one test at a time."),
    item("BOOK-SALTFAT", "Salt, Fat, Acid, Heat", "Canongate", "books", 2800, 41, "The four elements of good cooking, explained with warmth and illustrations."),
    item("BOOK-WILDCAMP", "Wild Camping Europe", "Outdoor Press", "books", 1999, 27, "Over a hundred remote places to pitch a tent, with maps and local advice."),
    item("BOOK-SRE", "Site Reliability Engineering", "O'Reilly Media", "books", 4290, 13, "How Google runs production systems: error budgets, monitoring and incident response."),
    item("BOOK-FLAVOUR", "The Flavour Thesaurus", "Bloomsbury", "books", 1899, 5, "Pairings, recipes and ideas for the creative cook, arranged by flavour."),
    item("BOOK-HIKEALPS", "Hiking the Alps", "Outdoor Press", "books", 2499, 33, "Hut-to-hut routes across four countries, with elevation profiles and tips."),
    // outdoor
    item("OUT-TENT-2P", "Ultralight Tent 2 Person", "Fjellstad", "outdoor", 34900, 7, "A freestanding double-wall tent weighing 1.3 kg, pitched in five minutes."),
    item("OUT-BAG-DOWN", "Down Sleeping Bag -5C", "Fjellstad", "outdoor", 27900, 11, "Responsibly sourced 800-fill down keeps you warm in the shoulder seasons."),
    item("OUT-STOVE-GAS", "Compact Gas Stove", "Trailcraft", "outdoor", 4490, 58, "Boils a litre of water in three minutes and folds into its own pot."),
    item("OUT-PACK-45L", "Trekking Backpack 45L", "Alpen Gear", "outdoor", 16900, 19, "An adjustable back system, a rain cover and pockets you can reach on the move."),
    item("OUT-POLES-CF", "Carbon Trekking Poles Pair", "Alpen Gear", "outdoor", 11900, 0, "Three-section carbon poles with cork grips and quick locks."),
    item("OUT-LAMP-400", "Headlamp 400 Lumen", "Trailcraft", "outdoor", 3990, 102, "A rechargeable headlamp with red light mode and a lock for your pack."),
    item("OUT-BOTTLE-1L", "Insulated Bottle 1L", "Trailcraft", "outdoor", 3290, 160, "Double-walled steel keeps drinks cold for a day or hot for twelve hours."),
    item("OUT-MAT-INFL", "Inflatable Sleeping Mat", "Fjellstad", "outdoor", 8990, 24, "Packs to the size of a bottle and insulates you from cold ground."),
    item("OUT-JACKET-RN", "Waterproof Rain Jacket", "Alpen Gear", "outdoor", 19900, 3, "A three-layer shell with taped seams and pit zips. Light enough to always carry."),
    item("OUT-FILTER-H2O", "Water Filter Squeeze", "Trailcraft", "outdoor", 3490, 66, "Removes bacteria and protozoa from streams; screws onto standard bottles."),
    item("OUT-CHAIR-FLD", "Folding Camp Chair", "Fjellstad", "outdoor", 7900, 30, "Sets up in seconds and weighs under a kilo. Holds up to 120 kg."),
    // audio
    item("AUD-HP-ANC", "Noise Cancelling Headphones", "Klangwerk", "audio", 29900, 16, "Adaptive noise cancelling, thirty hours of battery and a warm, detailed sound."),
    item("AUD-EAR-TWS", "True Wireless Earbuds", "Klangwerk", "audio", 12900, 48, "Compact earbuds with a charging case, water resistance and clear calls."),
    item("AUD-SPK-BT", "Portable Bluetooth Speaker", "Soundcove", "audio", 8900, 73, "Waterproof, dustproof and loud enough for the beach. Twelve hours per charge."),
    item("AUD-TT-BELT", "Belt-Drive Turntable", "Vinylux", "audio", 34900, 2, "A manual turntable with a switchable preamp and a pre-mounted cartridge."),
    item("AUD-AMP-INT", "Integrated Stereo Amplifier", "Vinylux", "audio", 59900, 5, "Fifty watts per channel, a phono stage and a headphone output."),
    item("AUD-SPK-BOOK", "Bookshelf Speakers Pair", "Soundcove", "audio", 39900, 9, "Two-way speakers with silk-dome tweeters for a natural, open sound."),
    item("AUD-DAC-USB", "USB DAC and Headphone Amp", "Klangwerk", "audio", 14900, 0, "Plays high-resolution audio from a laptop and drives demanding headphones."),
    item("AUD-RADIO-DAB", "DAB+ Kitchen Radio", "Soundcove", "audio", 7990, 38, "Digital radio with presets, a kitchen timer and a clear, full voice."),
    item("AUD-CABLE-RCA", "RCA Interconnect Cable 1m", "Vinylux", "audio", 1990, 120, "Shielded oxygen-free copper with gold-plated plugs."),
    item("AUD-MIC-USB", "USB Podcast Microphone", "Klangwerk", "audio", 10900, 21, "A cardioid condenser microphone with a zero-latency monitoring output."),
    item("AUD-STAND-HP", "Walnut Headphone Stand", "Tideway Home", "audio", 3900, 44, "A solid walnut stand that keeps headphones tidy on the desk."),
];

/// The id of the seeded item `sku`: a UUID (version 8, custom) from the SHA-256 of the SKU,
/// so every database that seeds the demo catalog gives each item the same id.
pub fn item_id(sku: &str) -> String {
    let digest = Sha256::digest(format!("tideway-catalog-seed:{sku}").as_bytes());
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Inserts the categories that are missing.
#[tracing::instrument(skip_all, err)]
pub async fn ensure_categories(db: &Db) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    for (position, category) in (0_i64..).zip(CATEGORIES) {
        sqlx::query(
            "INSERT INTO categories (id, name, position) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(category.id)
        .bind(category.name)
        .bind(position)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Seeds the demo catalog when the catalog has no items. Returns the number of items added.
#[tracing::instrument(skip_all, err)]
pub async fn seed_if_empty(db: &Db) -> Result<u64, sqlx::Error> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM items")
        .fetch_one(db.pool())
        .await?;
    if count > 0 {
        return Ok(0);
    }
    // Older items first: item i was "created" i minutes before the newest, so sorting by
    // `newest` is meaningful and deterministic.
    let newest = now();
    let mut tx = db.begin().await?;
    let mut added = 0;
    let total = ITEMS.len() as i64;
    for (index, item) in (0_i64..).zip(ITEMS) {
        let created_at = crate::time::format(newest - time::Duration::minutes(total - index));
        let result = sqlx::query(
            "INSERT INTO items (id, sku, name, description, brand, category, price_minor, \
             currency, stock, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10) ON CONFLICT DO NOTHING",
        )
        .bind(item_id(item.sku))
        .bind(item.sku)
        .bind(item.name)
        .bind(item.description)
        .bind(item.brand)
        .bind(item.category)
        .bind(item.price_minor)
        .bind(tideway_catalog_api::default_currency())
        .bind(item.stock)
        .bind(&created_at)
        .execute(&mut *tx)
        .await?;
        added += result.rows_affected();
    }
    tx.commit().await?;
    tracing::info!(added, "seeded the demo catalog");
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn seed_data_is_consistent() {
        assert!(ITEMS.len() >= 60);
        let skus: HashSet<_> = ITEMS.iter().map(|i| i.sku).collect();
        assert_eq!(skus.len(), ITEMS.len(), "SKUs are unique");
        let ids: HashSet<_> = ITEMS.iter().map(|i| item_id(i.sku)).collect();
        assert_eq!(ids.len(), ITEMS.len(), "ids are unique");
        for item in ITEMS {
            assert!(
                CATEGORIES.iter().any(|c| c.id == item.category),
                "{}",
                item.sku
            );
            assert!(
                crate::items::validate::sku(item.sku).is_ok(),
                "{}",
                item.sku
            );
            assert!(
                crate::items::validate::name(item.name).is_ok(),
                "{}",
                item.sku
            );
            assert!(
                crate::items::validate::brand(item.brand).is_ok(),
                "{}",
                item.sku
            );
            assert!(
                crate::items::validate::price(item.price_minor).is_ok(),
                "{}",
                item.sku
            );
            assert!(
                crate::items::validate::stock(item.stock).is_ok(),
                "{}",
                item.sku
            );
            assert!(
                item.name.is_ascii(),
                "names sort alike on both engines: {}",
                item.sku
            );
        }
        for category in CATEGORIES {
            assert!(ITEMS.iter().filter(|i| i.category == category.id).count() >= 5);
        }
        assert!(ITEMS.iter().filter(|i| i.stock == 0).count() >= 3);
        assert!(ITEMS.iter().filter(|i| (1..=5).contains(&i.stock)).count() >= 3);
    }

    #[test]
    fn item_ids_are_stable_uuids() {
        let id = item_id("COF-ETH-YIRG");
        assert_eq!(id, item_id("COF-ETH-YIRG"));
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        assert_ne!(id, item_id("COF-COL-HUIL"));
    }
}
