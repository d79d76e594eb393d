//! Seed users: created at start when missing, brought in line with the configuration when
//! present (and enabled again if they had been disabled). Running it again changes nothing,
//! and replicas starting together do not clash. Accounts listed to disable (retired demo
//! accounts) are disabled at start and their sessions revoked.

use anyhow::Context;
use secrecy::ExposeSecret;
use tideway_identity_api::CUSTOMER_ROLE;
use tideway_store::Db;

use crate::{
    config::SeedUser,
    now_text, password,
    users::{self, UserRow, join_roles, validate_email, validate_name},
};

/// Ensures every seed user exists with its configured name, roles and password.
#[tracing::instrument(skip_all, fields(count = seeds.len()), err)]
pub(crate) async fn ensure(
    db: &Db,
    hasher: &password::Hasher,
    seeds: &[SeedUser],
) -> anyhow::Result<()> {
    for (i, seed) in seeds.iter().enumerate() {
        ensure_one(db, hasher, seed)
            .await
            .with_context(|| format!("cannot seed identity.seed_users[{i}]"))?;
    }
    Ok(())
}

async fn ensure_one(db: &Db, hasher: &password::Hasher, seed: &SeedUser) -> anyhow::Result<()> {
    let email = validate_email(&seed.email).map_err(anyhow::Error::msg)?;
    let name = validate_name(&seed.name).map_err(anyhow::Error::msg)?;
    let mut roles = vec![CUSTOMER_ROLE.to_owned()];
    for role in &seed.roles {
        if !roles.contains(role) {
            roles.push(role.clone());
        }
    }
    let secret = seed.password.expose_secret().to_owned();
    match users::find_by_email(db.pool(), &email).await? {
        None => {
            let user = UserRow {
                id: uuid::Uuid::now_v7().to_string(),
                email,
                name,
                password_hash: hasher.hash(secret).await?,
                roles,
                created_at: now_text(),
                disabled: false,
            };
            match users::insert(db.pool(), &user).await {
                Ok(()) => tracing::info!(user_id = %user.id, "seeded a user"),
                // Another replica seeded it a moment ago; it applied the same configuration.
                Err(err) if tideway_store::is_unique_violation(&err) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Some(existing) => {
            let mut changed = false;
            if existing.name != name || existing.roles != roles {
                sqlx::query("UPDATE users SET name = $1, roles = $2 WHERE id = $3")
                    .bind(&name)
                    .bind(join_roles(&roles))
                    .bind(&existing.id)
                    .execute(db.pool())
                    .await?;
                changed = true;
            }
            if existing.disabled {
                sqlx::query("UPDATE users SET disabled = 0 WHERE id = $1")
                    .bind(&existing.id)
                    .execute(db.pool())
                    .await?;
                changed = true;
            }
            if !hasher
                .verify(secret.clone(), existing.password_hash.clone())
                .await?
            {
                sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                    .bind(hasher.hash(secret).await?)
                    .bind(&existing.id)
                    .execute(db.pool())
                    .await?;
                changed = true;
            }
            if changed {
                tracing::info!(user_id = %existing.id, "updated a seed user from the configuration");
            }
        }
    }
    Ok(())
}

/// Disables the accounts of `emails` that exist and revokes their sessions; an email without
/// an account is skipped (nothing to disable), an account already disabled stays so.
#[tracing::instrument(skip_all, fields(count = emails.len()), err)]
pub(crate) async fn disable(db: &Db, emails: &[String]) -> anyhow::Result<()> {
    for (i, email) in emails.iter().enumerate() {
        let email = validate_email(email)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("cannot disable identity.disabled_users[{i}]"))?;
        let Some(user) = users::find_by_email(db.pool(), &email).await? else {
            continue;
        };
        let mut tx = db.begin().await?;
        sqlx::query("UPDATE users SET disabled = 1 WHERE id = $1")
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        crate::tokens::revoke_user_sessions(&mut tx, &user.id).await?;
        tx.commit().await?;
        if !user.disabled {
            tracing::info!(user_id = %user.id, "disabled an account and ended its sessions");
        }
    }
    Ok(())
}
