//! Version ordering schemes.

/// How a device's versions are ordered (`version_scheme` in the device config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionScheme {
    /// Eclipse SmartHome: split on `.`, `-`, `_`; numeric parts compare as numbers.
    #[default]
    Esh,
    /// Espressif IoT_Demo: `[v|b]N.N.Nt<ptype>(o|l|a|n)`.
    Espressif,
    /// Particle: a single integer.
    Particle,
    /// Semantic Versioning 2.0.0.
    Semver,
}
