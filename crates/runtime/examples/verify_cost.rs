//! CPU per access-token verification (`JwtVerifier::verify`), the check every signed-in
//! request pays at the gateway and again at each service.
//!
//! `cargo run --release -p tideway-runtime --example verify_cost [N]` prints the median of
//! five interleaved rounds of N verifications (default 20,000) of one token, in
//! microseconds each: `JwtVerifier::verify` (its keys decoded once and its rules built
//! once), and beside it the same checks with the key decoded from its JWK and the rules
//! built for every token, as the verifier did before.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tideway_runtime::auth::{Claims, JwtVerifier, TokenSigner};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let signer = TokenSigner::generate()?;
    let claims = TokenSigner::claims(
        "user-1",
        "a@example.com",
        &["customer"],
        "tideway",
        "tideway",
        Duration::from_secs(900),
    );
    let token = signer.sign(&claims)?;
    let verifier = JwtVerifier::from_keys(signer.jwks(), "tideway", "tideway");
    let jwks = signer.jwks();
    let per_token = |token: &str| -> Result<Claims, Box<dyn std::error::Error>> {
        let key = DecodingKey::from_jwk(&jwks.keys[0])?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&["tideway"]);
        validation.set_audience(&["tideway"]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Ok(jsonwebtoken::decode::<Claims>(token, &key, &validation)?.claims)
    };
    let (mut cached, mut rebuilt) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..n {
            verifier.verify(&token).await?;
        }
        cached.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(n));
        let start = Instant::now();
        for _ in 0..n {
            per_token(&token)?;
        }
        rebuilt.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
    for (name, rounds) in [("verify", &mut cached), ("rebuilt per token", &mut rebuilt)] {
        rounds.sort_by(f64::total_cmp);
        println!(
            "{name}: median {:.2} µs, min {:.2}, max {:.2} (5 rounds of {n})",
            rounds[2], rounds[0], rounds[4]
        );
    }
    Ok(())
}
