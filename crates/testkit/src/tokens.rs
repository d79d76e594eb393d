//! Access tokens for tests, signed like the identity service signs them.

use std::{sync::Arc, time::Duration};

use tideway_runtime::auth::{Claims, JwtVerifier, TokenSigner};

/// The issuer of the shop's tokens.
pub const ISSUER: &str = "tideway";

/// The audience of the shop's tokens.
pub const AUDIENCE: &str = "tideway";

/// How long a minted token is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);

/// A signing key and the tokens it mints; clones share the key.
///
/// A service under test is built with [`verifier`](Self::verifier), so it accepts exactly
/// the tokens of this key, issuer and audience.
#[derive(Debug, Clone)]
pub struct TestTokens {
    signer: Arc<TokenSigner>,
}

impl Default for TestTokens {
    fn default() -> Self {
        Self::new()
    }
}

impl TestTokens {
    /// A new random key.
    ///
    /// # Panics
    /// When no key can be generated.
    pub fn new() -> Self {
        Self::from_signer(TokenSigner::generate().expect("generate a signing key"))
    }

    /// Tokens of an existing key (a service's own, say).
    pub fn from_signer(signer: TokenSigner) -> Self {
        Self {
            signer: Arc::new(signer),
        }
    }

    /// The key.
    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }

    /// A verifier that trusts this key, for the shop's issuer and audience.
    pub fn verifier(&self) -> Arc<JwtVerifier> {
        Arc::new(JwtVerifier::from_keys(self.signer.jwks(), ISSUER, AUDIENCE))
    }

    /// Claims of `user` (email `<user>@example.com`) with `roles`, issued now, valid for
    /// [`TOKEN_TTL`]; change any field before [`sign`](Self::sign)ing for an odd token.
    pub fn claims(user: &str, roles: &[&str]) -> Claims {
        TokenSigner::claims(
            user,
            &format!("{user}@example.com"),
            roles,
            ISSUER,
            AUDIENCE,
            TOKEN_TTL,
        )
    }

    /// `claims` signed with this key.
    ///
    /// # Panics
    /// When signing fails.
    pub fn sign(&self, claims: &Claims) -> String {
        self.signer.sign(claims).expect("sign test claims")
    }

    /// A valid token of `user` with `roles`.
    pub fn token(&self, user: &str, roles: &[&str]) -> String {
        self.sign(&Self::claims(user, roles))
    }

    /// A token of `user` with `roles` that expired an hour ago (far beyond any leeway).
    pub fn expired(&self, user: &str, roles: &[&str]) -> String {
        let mut claims = Self::claims(user, roles);
        claims.iat -= 7200;
        claims.exp = claims.iat + 3600;
        self.sign(&claims)
    }
}

#[cfg(test)]
mod tests {
    use tideway_runtime::auth::AuthError;

    use super::*;

    #[tokio::test]
    async fn the_verifier_takes_minted_tokens_and_refuses_expired_and_foreign_ones() {
        let tokens = TestTokens::new();
        let verifier = tokens.verifier();
        let claims = verifier
            .verify(&tokens.token("alice", &["customer"]))
            .await
            .expect("a minted token verifies");
        assert_eq!(
            (claims.sub.as_str(), claims.email.as_str()),
            ("alice", "alice@example.com")
        );
        assert!(claims.has_role("customer"));
        assert!(matches!(
            verifier.verify(&tokens.expired("alice", &[])).await,
            Err(AuthError::Expired)
        ));
        let foreign = TestTokens::new().token("alice", &[]);
        assert!(verifier.verify(&foreign).await.is_err());
        assert!(
            tokens
                .clone()
                .verifier()
                .verify(&tokens.token("bob", &[]))
                .await
                .is_ok()
        );
    }
}
