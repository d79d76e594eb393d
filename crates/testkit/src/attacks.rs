//! Hostile access tokens: what an attacker tries against a JWT check. Each must be refused
//! with 401 by the gateway and by every service, changing nothing.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::TestTokens;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TestTokens {
    /// Tokens of `user` with `roles`, each wrong in one way, named: `alg: none`, HS256
    /// signed with the public key (as raw bytes and as its JWK text), no `kid`, an unknown
    /// `kid`, wrong `iss`, wrong `aud`, expired, `nbf` in the future, a tampered payload (an
    /// admin role added under the same signature), a tampered signature, another key's
    /// signature, an opaque refresh-token-like string, and garbage.
    ///
    /// # Panics
    /// When signing fails.
    pub fn attacks(&self, user: &str, roles: &[&str]) -> Vec<(&'static str, String)> {
        let signer = self.signer();
        let claims = serde_json::to_value(Self::claims(user, roles)).expect("claims as JSON");
        let kid = signer.key_id().to_owned();
        let ed_key = EncodingKey::from_ed_pem(signer.to_pkcs8_pem().as_bytes())
            .expect("the test key as an encoding key");
        let sign = |header: Header, claims: &Value, key: &EncodingKey| {
            jsonwebtoken::encode(&header, claims, key).expect("sign an attack token")
        };
        let ed_header = |kid: Option<&str>| {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = kid.map(str::to_owned);
            header
        };
        let with = |field: &str, value: Value| {
            let mut claims = claims.clone();
            claims[field] = value;
            claims
        };
        let now = claims["iat"].as_u64().unwrap_or_default();

        let none = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT", "kid": kid})
                .to_string()
                .as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let jwk = serde_json::to_value(&signer.jwks().keys[0]).expect("the JWK as JSON");
        let public_x = jwk["x"].as_str().unwrap_or_default().to_owned();
        let public_raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&public_x)
            .expect("the public key's bytes");
        let mut hs_header = Header::new(Algorithm::HS256);
        hs_header.kid = Some(kid.clone());
        let hs_raw = sign(
            hs_header.clone(),
            &claims,
            &EncodingKey::from_secret(&public_raw),
        );
        let hs_text = sign(
            hs_header,
            &claims,
            &EncodingKey::from_secret(public_x.as_bytes()),
        );

        let valid = sign(ed_header(Some(&kid)), &claims, &ed_key);
        let parts: Vec<&str> = valid.split('.').collect();
        let mut elevated = claims.clone();
        // Someone else's account, with every role: a payload that differs whatever `roles`.
        elevated["sub"] = json!(format!("{user}-other"));
        elevated["roles"] = json!(["customer", "admin", "ops"]);
        let tampered_payload = format!(
            "{}.{}.{}",
            parts[0],
            b64(elevated.to_string().as_bytes()),
            parts[2]
        );
        let mut signature: Vec<char> = parts[2].chars().collect();
        let middle = signature.len() / 2;
        signature[middle] = if signature[middle] == 'A' { 'B' } else { 'A' };
        let tampered_signature = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            signature.into_iter().collect::<String>()
        );
        let other = TestTokens::new();
        let other_key = EncodingKey::from_ed_pem(other.signer().to_pkcs8_pem().as_bytes())
            .expect("another key");
        // Another key's signature under this key's id.
        let foreign = sign(ed_header(Some(&kid)), &claims, &other_key);

        vec![
            ("alg none", none),
            ("HS256 with the public key's bytes", hs_raw),
            ("HS256 with the public key's text", hs_text),
            ("no kid", sign(ed_header(None), &claims, &ed_key)),
            (
                "unknown kid",
                sign(ed_header(Some("not-a-key-id")), &claims, &ed_key),
            ),
            (
                "wrong iss",
                sign(
                    ed_header(Some(&kid)),
                    &with("iss", json!("elsewhere")),
                    &ed_key,
                ),
            ),
            (
                "wrong aud",
                sign(
                    ed_header(Some(&kid)),
                    &with("aud", json!("elsewhere")),
                    &ed_key,
                ),
            ),
            (
                "expired",
                sign(
                    ed_header(Some(&kid)),
                    &with("exp", json!(now.saturating_sub(3600))),
                    &ed_key,
                ),
            ),
            (
                "nbf in the future",
                sign(
                    ed_header(Some(&kid)),
                    &with("nbf", json!(now + 3600)),
                    &ed_key,
                ),
            ),
            ("tampered payload", tampered_payload),
            ("tampered signature", tampered_signature),
            ("another key's signature", foreign),
            ("an opaque refresh token", b64(&[7_u8; 32])),
            ("garbage", "not.a.token".to_owned()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use tideway_runtime::auth::AuthError;

    use crate::TestTokens;

    #[tokio::test]
    async fn every_attack_is_refused_by_the_verifier() {
        let tokens = TestTokens::new();
        let verifier = tokens.verifier();
        verifier
            .verify(&tokens.token("u1", &[]))
            .await
            .expect("a good token passes");
        let attacks = tokens.attacks("u1", &[]);
        assert_eq!(attacks.len(), 14);
        for (name, token) in attacks {
            match verifier.verify(&token).await {
                Err(AuthError::Invalid(_) | AuthError::Expired) => {}
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
