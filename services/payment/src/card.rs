//! Card numbers: parsed (12–19 digits once spaces are removed, Luhn check digit) and kept
//! out of logs. Only the last four digits are ever stored.

use std::fmt;

/// Why a card number was refused. The message is the decline reason sent to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid card number")]
pub struct InvalidCard;

/// A card number that passed the checks. `Debug` and `Display` show only the last four
/// digits, so it cannot leak into a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct CardNumber(String);

impl CardNumber {
    /// The fewest digits of a card number.
    pub const MIN_DIGITS: usize = 12;
    /// The most digits of a card number.
    pub const MAX_DIGITS: usize = 19;

    /// Parses `input`: spaces are ignored; then 12 to 19 ASCII digits with a valid Luhn
    /// check digit.
    pub fn parse(input: &str) -> Result<Self, InvalidCard> {
        let digits: String = input.chars().filter(|c| *c != ' ').collect();
        if !(Self::MIN_DIGITS..=Self::MAX_DIGITS).contains(&digits.len())
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || !luhn(&digits)
        {
            return Err(InvalidCard);
        }
        Ok(Self(digits))
    }

    /// The digits (for the provider only; never log or store them).
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// The last four digits: what is stored and shown.
    pub fn last4(&self) -> &str {
        &self.0[self.0.len() - 4..]
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber(****{})", self.last4())
    }
}

impl fmt::Display for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "****{}", self.last4())
    }
}

/// The last four digits of something that is not a valid card, when it ends in four digits
/// (kept on the declined payment so an admin can tell which card was tried); else empty.
pub fn last4_of_invalid(input: &str) -> String {
    let digits: Vec<char> = input.chars().filter(|c| *c != ' ').collect();
    match digits.len().checked_sub(4) {
        Some(start) if digits[start..].iter().all(char::is_ascii_digit) => {
            digits[start..].iter().collect()
        }
        _ => String::new(),
    }
}

/// The Luhn check over ASCII digits: from the right, every second digit doubled (minus 9
/// past 9), the sum a multiple of 10.
fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use tideway_payment_api::{APPROVED_CARD, DECLINED_CARD, INSUFFICIENT_FUNDS_CARD};

    use super::*;

    #[test]
    fn the_test_cards_are_valid() {
        for card in [APPROVED_CARD, DECLINED_CARD, INSUFFICIENT_FUNDS_CARD] {
            assert!(CardNumber::parse(card).is_ok(), "{card}");
        }
    }

    #[test]
    fn spaces_are_ignored_and_only_the_last_four_show() {
        let card = CardNumber::parse("4242 4242 4242 4242").unwrap();
        assert_eq!(card.digits(), APPROVED_CARD);
        assert_eq!(card.last4(), "4242");
        assert_eq!(format!("{card:?}"), "CardNumber(****4242)");
        assert_eq!(card.to_string(), "****4242");
    }

    #[test]
    fn refuses_bad_numbers() {
        for bad in [
            "",
            "    ",
            "4242424242424241",                 // Luhn fails
            "42424242424",                      // 11 digits
            "42424242424242424242",             // 20 digits
            "4242-4242-4242-4242",              // dashes
            "424242424242424a",                 // a letter
            "４２４２４２４２４２４２４２４２", // full-width digits
        ] {
            assert_eq!(CardNumber::parse(bad), Err(InvalidCard), "{bad:?}");
        }
    }

    #[test]
    fn accepts_every_length_from_12_to_19_with_a_right_check_digit() {
        for len in CardNumber::MIN_DIGITS..=CardNumber::MAX_DIGITS {
            let body = "4".repeat(len - 1);
            let check = (0..10)
                .map(|d| format!("{body}{d}"))
                .find(|n| luhn(n))
                .unwrap();
            assert!(CardNumber::parse(&check).is_ok(), "{check}");
        }
    }

    #[test]
    fn last_four_of_invalid_input() {
        assert_eq!(last4_of_invalid("4242424242424241"), "4241");
        assert_eq!(last4_of_invalid("12"), "");
        assert_eq!(last4_of_invalid("abcd"), "");
    }
}
