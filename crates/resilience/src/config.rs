//! The one error a layer's constructor returns for a bad parameter.

/// A layer was given a parameter it cannot work with; names the layer and the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {layer} parameter `{parameter}`: {reason}")]
pub struct ConfigError {
    /// The layer that refused the parameter, e.g. `"deadline"`.
    pub layer: &'static str,
    /// The parameter's name as the constructor spells it.
    pub parameter: &'static str,
    /// Why it was refused, lower case.
    pub reason: &'static str,
}

impl ConfigError {
    pub(crate) fn new(layer: &'static str, parameter: &'static str, reason: &'static str) -> Self {
        Self {
            layer,
            parameter,
            reason,
        }
    }
}

/// A share of requests must lie in `0.0..=1.0`.
pub(crate) fn check_share(
    layer: &'static str,
    parameter: &'static str,
    share: f64,
) -> Result<f64, ConfigError> {
    if (0.0..=1.0).contains(&share) {
        Ok(share)
    } else {
        Err(ConfigError::new(
            layer,
            parameter,
            "must be a share between 0 and 1",
        ))
    }
}
