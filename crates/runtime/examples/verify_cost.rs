//! CPU per access-token verification (`JwtVerifier::verify`), the check every signed-in
//! request pays at the gateway and again at each service.
//!
//! `cargo run --release -p tideway-runtime --example verify_cost [N]` prints the median of
//! five rounds of N verifications (default 20,000) of one token, in microseconds each.

use std::time::{Duration, Instant};

use tideway_runtime::auth::{JwtVerifier, TokenSigner};

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
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..n {
            verifier.verify(&token).await?;
        }
        rounds.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
    rounds.sort_by(f64::total_cmp);
    println!(
        "verify: median {:.2} µs, min {:.2}, max {:.2} (5 rounds of {n})",
        rounds[2], rounds[0], rounds[4]
    );
    Ok(())
}
