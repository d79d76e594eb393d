//! Traffic mixes: which endpoint class each request goes to, and the deterministic
//! pseudo-random numbers that pick it (so a run with the same seed sends the same sequence).

use serde::Serialize;

/// A named traffic mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// Signed-in shoppers: browse 60%, search 15%, item 10%, basket 10%, checkout 5%
    /// (the checkout share is `--checkout-share`).
    Shop,
    /// Anonymous catalog reads: browse 65%, search 15%, item 20%. No users are created.
    Browse,
    /// Checkout only (add an item, check out); stops at once when the target has no
    /// checkout endpoint.
    Checkout,
}

/// A class of request, with its own histogram in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// A page of items, unfiltered or filtered by category.
    Browse,
    /// A full-text search.
    Search,
    /// One item.
    Item,
    /// The basket: view it, add an item, or now and then clear it.
    Basket,
    /// An add to the basket, then `POST /api/v1/basket/checkout`.
    Checkout,
    /// The checkout share of the shop mix, sent as a basket view because the target has no
    /// checkout endpoint.
    CheckoutAsBasketView,
    /// The one path given with `--path`.
    Path,
}

impl Endpoint {
    /// The name in the table and the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Browse => "browse",
            Self::Search => "search",
            Self::Item => "item",
            Self::Basket => "basket",
            Self::Checkout => "checkout",
            Self::CheckoutAsBasketView => "checkout_as_basket_view",
            Self::Path => "path",
        }
    }

    /// Whether requests of this class need a signed-in user.
    pub fn needs_user(self) -> bool {
        matches!(
            self,
            Self::Basket | Self::Checkout | Self::CheckoutAsBasketView
        )
    }
}

/// Endpoint classes with their weights; a request goes to class `k` with probability
/// `weight[k] / sum`.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    entries: Vec<(Endpoint, f64)>,
    total: f64,
}

impl Weights {
    /// The weights of `mix`; `checkout_share` is the shop mix's checkout percentage.
    /// `checkout_available` false sends that share as a basket view instead.
    pub fn of(mix: Mix, checkout_share: f64, checkout_available: bool) -> Self {
        let checkout = if checkout_available {
            Endpoint::Checkout
        } else {
            Endpoint::CheckoutAsBasketView
        };
        let entries = match mix {
            Mix::Shop => vec![
                (Endpoint::Browse, 60.0),
                (Endpoint::Search, 15.0),
                (Endpoint::Item, 10.0),
                (Endpoint::Basket, 10.0),
                (checkout, checkout_share),
            ],
            Mix::Browse => vec![
                (Endpoint::Browse, 65.0),
                (Endpoint::Search, 15.0),
                (Endpoint::Item, 20.0),
            ],
            Mix::Checkout => vec![(checkout, 100.0)],
        };
        Self::new(entries)
    }

    /// Every request to one class.
    pub fn single(endpoint: Endpoint) -> Self {
        Self::new(vec![(endpoint, 1.0)])
    }

    fn new(entries: Vec<(Endpoint, f64)>) -> Self {
        let entries: Vec<_> = entries.into_iter().filter(|(_, w)| *w > 0.0).collect();
        let total = entries.iter().map(|(_, w)| w).sum();
        Self { entries, total }
    }

    /// The class for a uniform random `r` in [0, 1).
    pub fn pick(&self, r: f64) -> Endpoint {
        let mut point = r * self.total;
        for (endpoint, weight) in &self.entries {
            if point < *weight {
                return *endpoint;
            }
            point -= weight;
        }
        self.entries
            .last()
            .map_or(Endpoint::Browse, |(endpoint, _)| *endpoint)
    }

    /// Whether any class needs a signed-in user.
    pub fn needs_users(&self) -> bool {
        self.entries.iter().any(|(e, _)| e.needs_user())
    }
}

/// SplitMix64: a tiny, well-mixed hash from a request number to 64 random bits.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from 64 random bits.
pub fn unit(bits: u64) -> f64 {
    // The top 53 bits fill an f64 mantissa exactly.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Independent random streams for one request: `draw(k)` is the k-th number of request `i`.
#[derive(Debug, Clone, Copy)]
pub struct Draws {
    seed: u64,
}

impl Draws {
    /// The streams of request `index` in a run seeded with `seed`.
    pub fn new(seed: u64, index: u64) -> Self {
        Self {
            seed: splitmix64(seed ^ splitmix64(index)),
        }
    }

    /// The `k`-th 64-bit draw.
    pub fn bits(self, k: u64) -> u64 {
        splitmix64(
            self.seed
                .wrapping_add(k.wrapping_mul(0xD1B5_4A32_D192_ED03)),
        )
    }

    /// The `k`-th draw as an index below `n` (0 when `n` is 0).
    pub fn below(self, k: u64, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.bits(k) % n as u64) as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn shares(weights: &Weights, n: u64) -> HashMap<Endpoint, f64> {
        let mut counts = HashMap::new();
        for i in 0..n {
            *counts
                .entry(weights.pick(unit(Draws::new(7, i).bits(0))))
                .or_insert(0u64) += 1;
        }
        counts
            .into_iter()
            .map(|(e, c)| (e, c as f64 * 100.0 / n as f64))
            .collect()
    }

    #[test]
    fn the_shop_mix_follows_its_weights() {
        let got = shares(&Weights::of(Mix::Shop, 5.0, true), 100_000);
        for (endpoint, want) in [
            (Endpoint::Browse, 60.0),
            (Endpoint::Search, 15.0),
            (Endpoint::Item, 10.0),
            (Endpoint::Basket, 10.0),
            (Endpoint::Checkout, 5.0),
        ] {
            let share = got.get(&endpoint).copied().unwrap_or(0.0);
            assert!(
                (share - want).abs() < 0.6,
                "{endpoint:?}: {share}% vs {want}%"
            );
        }
    }

    #[test]
    fn without_checkout_its_share_is_a_basket_view_and_can_be_turned_off() {
        let got = shares(&Weights::of(Mix::Shop, 5.0, false), 50_000);
        assert!(!got.contains_key(&Endpoint::Checkout));
        let share = got[&Endpoint::CheckoutAsBasketView];
        assert!((share - 5.0).abs() < 0.6, "{share}");

        let got = shares(&Weights::of(Mix::Shop, 0.0, false), 50_000);
        assert!(!got.contains_key(&Endpoint::CheckoutAsBasketView));
        assert!((got[&Endpoint::Browse] - 60.0 / 0.95).abs() < 0.8);
    }

    #[test]
    fn browse_needs_no_users_and_shop_does() {
        assert!(!Weights::of(Mix::Browse, 5.0, true).needs_users());
        assert!(Weights::of(Mix::Shop, 5.0, true).needs_users());
        assert!(!Weights::single(Endpoint::Path).needs_users());
    }

    #[test]
    fn draws_are_uniform_enough_and_repeatable() {
        assert_eq!(Draws::new(1, 2).bits(3), Draws::new(1, 2).bits(3));
        assert_ne!(Draws::new(1, 2).bits(3), Draws::new(1, 3).bits(3));
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            buckets[Draws::new(0, i).below(1, 10)] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (900..1100).contains(&b)),
            "{buckets:?}"
        );
        assert!((0..1000).all(|i| (0.0..1.0).contains(&unit(splitmix64(i)))));
    }
}
