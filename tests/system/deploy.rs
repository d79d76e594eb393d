//! The configuration files the Kubernetes overlays mount at /etc/tideway/tideway.toml
//! (deploy/k8s/overlays/*/tideway.toml) load and validate as the binary loads them, and say
//! what the manifests around them expect. scripts/deploy-check.sh checks the manifests.

use std::path::{Path, PathBuf};

use tideway::{Config, ServiceName, config::BusKind};

fn overlay_file(overlay: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/k8s/overlays")
        .join(overlay)
        .join("tideway.toml")
}

fn overlay_config(overlay: &str) -> Config {
    let path = overlay_file(overlay);
    Config::load(Some(&path)).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn the_embedded_overlay_config_loads() {
    let config = overlay_config("embedded");
    assert_eq!(config.data_dir, Path::new("/data"));
    assert_eq!(config.gateway.listen, "0.0.0.0:8080");
    assert_eq!(config.bus.kind, BusKind::Embedded);
    assert!(!config.demo_users);
    assert!(config.identity.service.seed_users.is_empty());
    // The SQLite files and the generated key live on the volume.
    assert_eq!(
        config.catalog.service.database_url.sqlite_file(),
        Some("/data/catalog.db")
    );
    assert_eq!(
        config.identity.service.signing_key_file.as_deref(),
        Some(Path::new("/data/identity-signing-key.pem"))
    );
}

#[test]
fn the_distributed_overlay_config_loads() {
    let config = overlay_config("distributed");
    assert_eq!(config.gateway.listen, "0.0.0.0:8080");
    for service in ServiceName::ALL {
        let name = service.as_str();
        assert_eq!(config.listen_of(service), "0.0.0.0:8080", "{name}");
        assert_eq!(
            config.urls.of(service),
            format!("http://{name}:8080"),
            "{name}"
        );
    }
    assert_eq!(config.bus.kind, BusKind::Nats);
    assert_eq!(config.bus.nats_url, "nats://nats:4222");
    assert!(!config.demo_users);
    let identity = &config.identity.service;
    assert!(!identity.generate_signing_key);
    assert_eq!(
        identity.signing_key_file.as_deref(),
        Some(Path::new("/run/secrets/tideway/identity-signing-key.pem"))
    );
}
