//! Version ordering schemes and the upgrade decision.
//!
//! Devices report their firmware version as a free-form string, and every vendor
//! orders those strings differently: Eclipse SmartHome splits on delimiters,
//! Espressif's IoT_Demo encodes release type, product type and FOTA capability in
//! the string, Particle uses a plain integer, others use Semantic Versioning. The
//! engine must never install an image the device cannot take, so all ordering and
//! "may this image be installed" rules live here, behind one [`VersionScheme`]
//! chosen per device. Every function takes untrusted strings and reports bad ones
//! as [`VersionError`]; nothing here panics on any input.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::model::Prerequisite;

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

impl fmt::Display for VersionScheme {
    /// The name used in the config file (`esh`, `espressif`, `particle`, `semver`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VersionScheme::Esh => "esh",
            VersionScheme::Espressif => "espressif",
            VersionScheme::Particle => "particle",
            VersionScheme::Semver => "semver",
        })
    }
}

impl VersionScheme {
    /// Orders `a` against `b`; fails if either is not a valid version.
    ///
    /// Equal means "the same release", which need not be the same string:
    /// ESH `2.0-0` equals `2_0.0`, Espressif ignores ptype and upgrade flag,
    /// semver ignores build metadata.
    pub fn compare(self, a: &str, b: &str) -> Result<Ordering, VersionError> {
        match self {
            VersionScheme::Esh => {
                esh_validate(a)?;
                esh_validate(b)?;
                Ok(esh_compare(a, b))
            }
            VersionScheme::Espressif => {
                let a: EspressifVersion = a.parse()?;
                let b: EspressifVersion = b.parse()?;
                Ok(a.cmp_version(&b))
            }
            VersionScheme::Particle => Ok(particle_parse(a)?.cmp(&particle_parse(b)?)),
            VersionScheme::Semver => Ok(semver_parse(a)?.cmp_precedence(&semver_parse(b)?)),
        }
    }

    /// Checks that `v` is a valid version under this scheme.
    pub fn validate(self, v: &str) -> Result<(), VersionError> {
        match self {
            VersionScheme::Esh => esh_validate(v),
            VersionScheme::Espressif => v.parse::<EspressifVersion>().map(drop),
            VersionScheme::Particle => particle_parse(v).map(drop),
            VersionScheme::Semver => semver_parse(v).map(drop),
        }
    }
}

/// A version string that is not valid under a scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{version:?} is not a valid {scheme} version: {reason}")]
pub struct VersionError {
    pub scheme: VersionScheme,
    /// The offending string, shortened to [`VersionError::MAX_SHOWN`] characters.
    pub version: String,
    pub reason: String,
}

impl VersionError {
    /// How many characters of the offending string an error keeps.
    pub const MAX_SHOWN: usize = 64;

    fn new(scheme: VersionScheme, version: &str, reason: impl Into<String>) -> Self {
        let version = match version.char_indices().nth(Self::MAX_SHOWN) {
            Some((cut, _)) => format!("{}…", &version[..cut]),
            None => version.to_string(),
        };
        VersionError {
            scheme,
            version,
            reason: reason.into(),
        }
    }
}

// ---------------------------------------------------------------------------
// ESH
//
// ESH's `Firmware.Version` splits on `.`, `-`, `_` and compares part by part:
// two integers numerically, anything else with `String.compareTo`, and a
// version that runs out of parts first is older. We keep the part splitting and
// the seed examples, but differ deliberately in three places:
//
// * A number against a word: ESH compares them as strings, which is not
//   transitive (`10` < `1a` < `9` < `10`); Rust's sort may panic on a
//   non-total order. Here every number sorts below every word (`2` < `abc`,
//   `0` < `0rc1`), which matches ESH whenever the word starts with a letter.
// * Missing parts count as `0`, so `1.0` == `1.0.0` (ESH: `1.0` < `1.0.0`);
//   a device reporting `1.0` is not offered `1.0.0` forever.
// * Empty parts (`1..2`, `.1`, `1.`) are ignored, so `1..2` == `1.2`.
//
// Numeric parts of any length compare without overflow: strip leading zeros,
// then the longer is larger, then compare digit by digit (`01` == `1`).
// ---------------------------------------------------------------------------

fn esh_parts(v: &str) -> impl Iterator<Item = &str> {
    v.split(['.', '-', '_']).filter(|p| !p.is_empty())
}

fn esh_validate(v: &str) -> Result<(), VersionError> {
    if esh_parts(v).next().is_none() {
        let reason = if v.is_empty() {
            "empty"
        } else {
            "contains only delimiters (`.`, `-`, `_`)"
        };
        return Err(VersionError::new(VersionScheme::Esh, v, reason));
    }
    Ok(())
}

fn esh_compare(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (esh_parts(a), esh_parts(b));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (x, y) => match esh_part_cmp(x.unwrap_or("0"), y.unwrap_or("0")) {
                Ordering::Equal => {}
                other => return other,
            },
        }
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn esh_part_cmp(a: &str, b: &str) -> Ordering {
    match (is_digits(a), is_digits(b)) {
        (true, true) => digits_cmp(a, b),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

/// Compares two ASCII digit strings as numbers of unbounded size.
fn digits_cmp(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

// ---------------------------------------------------------------------------
// Espressif
// ---------------------------------------------------------------------------

/// Which upgrade paths an Espressif image supports (the `(o|l|a|n)` suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EspressifUpgrade {
    /// `o`: online (cloud) upgrade.
    Online,
    /// `l`: local upgrade.
    Local,
    /// `a`: both online and local upgrade.
    All,
    /// `n`: no upgrade support (non-FOTA firmware).
    None,
}

impl EspressifUpgrade {
    /// The one-letter flag used in version strings.
    pub fn flag(self) -> char {
        match self {
            EspressifUpgrade::Online => 'o',
            EspressifUpgrade::Local => 'l',
            EspressifUpgrade::All => 'a',
            EspressifUpgrade::None => 'n',
        }
    }

    fn from_flag(flag: &str) -> Option<Self> {
        match flag {
            "o" => Some(EspressifUpgrade::Online),
            "l" => Some(EspressifUpgrade::Local),
            "a" => Some(EspressifUpgrade::All),
            "n" => Some(EspressifUpgrade::None),
            _ => None,
        }
    }
}

/// An Espressif IoT_Demo firmware version, e.g. `v1.0.2t45772(a)`.
///
/// Format: `v` (formal) or `b` (beta), `major.minor.patch`, an optional `.`,
/// `t`, the product type (ptype), and the upgrade flag in parentheses. Case and
/// layout are exact; the cloud's `[0, 9]` range per number is not enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspressifVersion {
    pub beta: bool,
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    pub ptype: u32,
    pub upgrade: EspressifUpgrade,
}

impl EspressifVersion {
    /// Release order: by (major, minor, patch), formal `v` after beta `b` of the
    /// same numbers. Ptype and upgrade flag do not take part.
    pub fn cmp_version(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch, !self.beta).cmp(&(
            other.major,
            other.minor,
            other.patch,
            !other.beta,
        ))
    }
}

impl fmt::Display for EspressifVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}.{}.{}t{}({})",
            if self.beta { 'b' } else { 'v' },
            self.major,
            self.minor,
            self.patch,
            self.ptype,
            self.upgrade.flag()
        )
    }
}

impl FromStr for EspressifVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| VersionError::new(VersionScheme::Espressif, s, reason);
        let (beta, rest) = if let Some(rest) = s.strip_prefix('v') {
            (false, rest)
        } else if let Some(rest) = s.strip_prefix('b') {
            (true, rest)
        } else {
            return Err(err("must start with `v` (formal) or `b` (beta)".into()));
        };
        let (numbers, tail) = rest
            .split_once('t')
            .ok_or_else(|| err("missing `t<ptype>` after the version number".into()))?;
        let numbers = numbers.strip_suffix('.').unwrap_or(numbers);
        let mut nums = numbers.split('.');
        let (Some(major), Some(minor), Some(patch), None) =
            (nums.next(), nums.next(), nums.next(), nums.next())
        else {
            return Err(err(format!(
                "version number {numbers:?} is not `major.minor.patch`"
            )));
        };
        let (ptype, flag) = tail
            .strip_suffix(')')
            .and_then(|t| t.split_once('('))
            .ok_or_else(|| err("missing upgrade flag `(o|l|a|n)` at the end".into()))?;
        let upgrade = EspressifUpgrade::from_flag(flag).ok_or_else(|| {
            err(format!(
                "upgrade flag {flag:?} is not one of `o`, `l`, `a`, `n`"
            ))
        })?;
        Ok(EspressifVersion {
            beta,
            major: parse_u32(major, "major").map_err(err)?,
            minor: parse_u32(minor, "minor").map_err(err)?,
            patch: parse_u32(patch, "patch").map_err(err)?,
            ptype: parse_u32(ptype, "ptype").map_err(err)?,
            upgrade,
        })
    }
}

/// Parses plain ASCII decimal digits (no sign, no spaces) into a `u32`.
fn parse_u32(s: &str, what: &str) -> Result<u32, String> {
    if !is_digits(s) {
        return Err(format!("{what} {s:?} is not a decimal number"));
    }
    s.parse()
        .map_err(|_| format!("{what} {s} is too large (max {})", u32::MAX))
}

// ---------------------------------------------------------------------------
// Particle, Semver
// ---------------------------------------------------------------------------

/// A Particle product firmware version: plain decimal digits (leading zeros
/// allowed), no sign, no spaces, at most `u64::MAX`.
fn particle_parse(v: &str) -> Result<u64, VersionError> {
    let err = |reason: String| VersionError::new(VersionScheme::Particle, v, reason);
    if !is_digits(v) {
        return Err(err("must be a non-negative decimal integer".into()));
    }
    v.parse()
        .map_err(|_| err(format!("too large (max {})", u64::MAX)))
}

/// A Semantic Versioning 2.0.0 version. One leading lowercase `v` is tolerated
/// (`v1.2.3` is `1.2.3`) because firmware tags commonly carry it.
fn semver_parse(v: &str) -> Result<semver::Version, VersionError> {
    let bare = v.strip_prefix('v').unwrap_or(v);
    semver::Version::parse(bare)
        .map_err(|e| VersionError::new(VersionScheme::Semver, v, e.to_string()))
}

// ---------------------------------------------------------------------------
// The upgrade decision
// ---------------------------------------------------------------------------

/// Why an image must not be installed on a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRefusal {
    /// `only_newer` is set and the target is not newer than the current version.
    #[error("target version {target} is not newer than current {current}")]
    NotNewer { current: String, target: String },
    /// The device does not run the version the image requires first.
    #[error("prerequisite not met: current version {current} is not {required}")]
    PrerequisiteNotMet {
        current: String,
        /// The requirement, e.g. `>= 1.2` or `one of 1.0, 1.1`.
        required: String,
    },
    /// The image is built for another product or cannot be installed at all.
    #[error("incompatible firmware: {reason}")]
    Incompatible { reason: String },
    /// A version (current, target or prerequisite) is not valid under the scheme.
    #[error(transparent)]
    Invalid(#[from] VersionError),
}

/// True when `target` is newer than `current` under `scheme`.
pub fn is_newer(scheme: VersionScheme, current: &str, target: &str) -> Result<bool, VersionError> {
    Ok(scheme.compare(target, current)? == Ordering::Greater)
}

/// Decides whether a device running `current` may install `target`.
///
/// Checks, in order: both versions are valid; scheme compatibility (Espressif:
/// the target must support FOTA, i.e. not `(n)`, and have the current ptype);
/// with `only_newer`, the target is newer (with it off any version, including
/// the current one, may be installed: rollback and reinstall); the
/// prerequisite, compared under the scheme. An empty `OneOf` list is never met,
/// and an invalid prerequisite version is [`UpgradeRefusal::Invalid`].
pub fn check_upgrade(
    scheme: VersionScheme,
    current: &str,
    target: &str,
    prerequisite: Option<&Prerequisite>,
    only_newer: bool,
) -> Result<(), UpgradeRefusal> {
    let order = scheme.compare(target, current)?;
    if scheme == VersionScheme::Espressif {
        espressif_compatible(current, target)?;
    }
    if only_newer && order != Ordering::Greater {
        return Err(UpgradeRefusal::NotNewer {
            current: current.to_string(),
            target: target.to_string(),
        });
    }
    let Some(prerequisite) = prerequisite else {
        return Ok(());
    };
    let (met, required) = match prerequisite {
        Prerequisite::AtLeast(min) => (
            scheme.compare(current, min)? != Ordering::Less,
            format!(">= {min}"),
        ),
        Prerequisite::OneOf(allowed) => {
            let mut met = false;
            for version in allowed {
                met |= scheme.compare(current, version)? == Ordering::Equal;
            }
            let required = if allowed.is_empty() {
                "one of (no versions listed)".to_string()
            } else {
                format!("one of {}", allowed.join(", "))
            };
            (met, required)
        }
    };
    if met {
        Ok(())
    } else {
        Err(UpgradeRefusal::PrerequisiteNotMet {
            current: current.to_string(),
            required,
        })
    }
}

fn espressif_compatible(current: &str, target: &str) -> Result<(), UpgradeRefusal> {
    let cur: EspressifVersion = current.parse()?;
    let tgt: EspressifVersion = target.parse()?;
    if tgt.upgrade == EspressifUpgrade::None {
        return Err(UpgradeRefusal::Incompatible {
            reason: format!("target version {target} is marked `(n)`: it does not support FOTA"),
        });
    }
    if tgt.ptype != cur.ptype {
        return Err(UpgradeRefusal::Incompatible {
            reason: format!(
                "target version {target} is for ptype {}, current {current} is ptype {}",
                tgt.ptype, cur.ptype
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};
    use VersionScheme::{Esh, Espressif, Particle, Semver};

    /// Asserts `compare(a, b)` and its mirror image for every row.
    fn assert_orders(scheme: VersionScheme, rows: &[(&str, &str, Ordering)]) {
        for &(a, b, want) in rows {
            assert_eq!(scheme.compare(a, b), Ok(want), "{scheme}: {a} vs {b}");
            assert_eq!(
                scheme.compare(b, a),
                Ok(want.reverse()),
                "{scheme}: {b} vs {a}"
            );
        }
    }

    fn assert_invalid(scheme: VersionScheme, inputs: &[&str]) {
        for &v in inputs {
            let err = scheme.validate(v).expect_err(v);
            assert_eq!(err.scheme, scheme, "{v}");
            assert_eq!(scheme.compare(v, v), Err(err.clone()), "{v}");
            assert!(
                err.to_string().contains(&format!("{scheme} version")),
                "{err}"
            );
        }
    }

    #[test]
    fn esh_seed_examples() {
        assert_orders(
            Esh,
            &[
                ("2-0-1", "2.0.0", Greater),
                ("2.0.0", "1-9_9.9_abc", Greater),
                ("2-0-1", "1-9_9.9_abc", Greater),
                ("2.0-0", "2-0_0", Equal),
                ("2-0_0", "2_0.0", Equal),
                ("2.0-0", "2_0.0", Equal),
                ("xyz_1", "abc.2", Greater),
                ("abc.2", "2-0-1", Greater),
                ("xyz_1", "2-0-1", Greater),
            ],
        );
    }

    #[test]
    fn esh_numeric_parts_compare_as_numbers() {
        assert_orders(
            Esh,
            &[
                ("1.10", "1.9", Greater),
                ("1.01", "1.1", Equal),
                ("1.0", "1.0.0", Equal),
                ("1", "1.0.0.0", Equal),
                ("1.0.1", "1.0", Greater),
                ("1.0", "1.0.a", Less),
                ("1.0.0", "1.0.0rc1", Less),
                ("1.a", "1.b", Less),
                ("1..2", "1.2", Equal),
                ("V1.2-b18", "V1.2-b12", Greater),
                (
                    "99999999999999999999999999",
                    "99999999999999999999999998",
                    Greater,
                ),
                ("1.000000000000000000000000000042", "1.42", Equal),
                ("1.184467440737095516160", "1.18446744073709551615", Greater),
            ],
        );
    }

    #[test]
    fn esh_order_is_total() {
        // ESH's string compare of `10` vs `1a` would make this set cyclic.
        let versions = [
            "1", "9", "10", "1a", "9a", "10a", "a", "abc", "0", "00", "1.0", "1-0-0", "+",
            "1.2rc1", "1.2", "Z", "z", "é",
        ];
        for a in versions {
            for b in versions {
                for c in versions {
                    let ab = Esh.compare(a, b).unwrap();
                    let bc = Esh.compare(b, c).unwrap();
                    let ac = Esh.compare(a, c).unwrap();
                    if ab != Greater && bc != Greater {
                        assert_ne!(ac, Greater, "{a} <= {b} <= {c}");
                    }
                }
            }
        }
    }

    #[test]
    fn esh_accepts_anything_but_empty() {
        for v in ["x", " ", "1.0\n", "é.1", "\u{0}"] {
            assert_eq!(Esh.validate(v), Ok(()), "{v:?}");
        }
        assert_invalid(Esh, &["", ".", "-_."]);
    }

    #[test]
    fn espressif_parses() {
        let cases: &[(&str, bool, [u32; 4], EspressifUpgrade)] = &[
            (
                "v1.0.2t45772(a)",
                false,
                [1, 0, 2, 45772],
                EspressifUpgrade::All,
            ),
            (
                "v1.0.2.t45772(a)",
                false,
                [1, 0, 2, 45772],
                EspressifUpgrade::All,
            ),
            (
                "b1.1.0t45772(o)",
                true,
                [1, 1, 0, 45772],
                EspressifUpgrade::Online,
            ),
            ("v0.0.0t0(l)", false, [0, 0, 0, 0], EspressifUpgrade::Local),
            (
                "b1.4.0t12335(n)",
                true,
                [1, 4, 0, 12335],
                EspressifUpgrade::None,
            ),
        ];
        for &(s, beta, [major, minor, patch, ptype], upgrade) in cases {
            let want = EspressifVersion {
                beta,
                major,
                minor,
                patch,
                ptype,
                upgrade,
            };
            assert_eq!(s.parse(), Ok(want), "{s}");
            assert_eq!(want.to_string().parse(), Ok(want), "{s} round trip");
        }
    }

    #[test]
    fn espressif_rejects() {
        let cases = [
            ("", "must start with"),
            ("1.0.2t45772(a)", "must start with"),
            ("V1.0.2t45772(a)", "must start with"),
            ("v1.0.2", "missing `t<ptype>`"),
            ("v1.0.245772(a)", "missing `t<ptype>`"),
            ("v1.0t45772(a)", "not `major.minor.patch`"),
            ("v1.0.2.3t45772(a)", "not `major.minor.patch`"),
            ("v1.0.2..t45772(a)", "not `major.minor.patch`"),
            ("v1.x.2t45772(a)", "minor \"x\""),
            ("v1.-0.2t45772(a)", "minor \"-0\""),
            ("v+1.0.2t45772(a)", "major \"+1\""),
            ("v1.0.2t45772", "missing upgrade flag"),
            ("v1.0.2t45772(a", "missing upgrade flag"),
            ("v1.0.2t45772(x)", "upgrade flag \"x\""),
            ("v1.0.2t45772(A)", "upgrade flag \"A\""),
            ("v1.0.2t45772()", "upgrade flag \"\""),
            ("v1.0.2t45772(a)(a)", "upgrade flag \"a)(a\""),
            ("v1.0.2t(a)", "ptype \"\""),
            ("v1.0.2tabc(a)", "ptype \"abc\""),
            ("v1.0.2t45772(a) ", "missing upgrade flag"),
            ("v1.0.99999999999t1(a)", "too large"),
            ("v١.0.2t1(a)", "major"),
            ("vé", "missing `t<ptype>`"),
        ];
        for (s, why) in cases {
            let err = s.parse::<EspressifVersion>().expect_err(s);
            assert_eq!(err.scheme, Espressif);
            assert!(err.reason.contains(why), "{s}: {err}");
        }
        assert_invalid(Espressif, &["v1.0.2", "b1.0.2t1(z)"]);
    }

    #[test]
    fn espressif_orders_by_numbers_then_formal_over_beta() {
        assert_orders(
            Espressif,
            &[
                ("v1.0.5t1(a)", "v1.1.0t1(a)", Less),
                ("b1.0.5t1(a)", "v1.0.5t1(a)", Less),
                ("v1.0.5t1(a)", "b1.0.6t1(a)", Less),
                ("v2.0.0t1(a)", "v1.9.9t1(a)", Greater),
                ("v1.0.2t1(a)", "v1.0.2.t2(n)", Equal),
            ],
        );
    }

    #[test]
    fn particle_is_a_plain_integer() {
        assert_orders(
            Particle,
            &[("10", "9", Greater), ("1", "1", Equal), ("007", "7", Equal)],
        );
        assert_invalid(
            Particle,
            &[
                "",
                "1.0",
                "-1",
                "+1",
                " 1",
                "1 ",
                "v1",
                "0x10",
                "99999999999999999999",
            ],
        );
    }

    #[test]
    fn semver_follows_precedence() {
        assert_orders(
            Semver,
            &[
                ("1.0.0-rc.1", "1.0.0", Less),
                ("1.0.0-alpha", "1.0.0-alpha.1", Less),
                ("1.0.0-rc.2", "1.0.0-rc.10", Less),
                ("1.10.0", "1.9.0", Greater),
                ("1.0.0+build.1", "1.0.0+build.2", Equal),
                ("v1.2.3", "1.2.3", Equal),
            ],
        );
        assert_invalid(
            Semver,
            &["", "1.0", "1", "V1.2.3", "vv1.2.3", "01.0.0", "1.0.0 "],
        );
    }

    #[test]
    fn is_newer_compares_target_against_current() {
        assert_eq!(is_newer(Esh, "1.0", "1.1"), Ok(true));
        assert_eq!(is_newer(Esh, "1.1", "1.0"), Ok(false));
        assert_eq!(is_newer(Esh, "1.0", "1.0.0"), Ok(false));
        assert!(is_newer(Particle, "1", "x").is_err());
    }

    #[test]
    fn check_upgrade_only_newer() {
        let rows: &[(VersionScheme, &str, &str, bool, bool)] = &[
            // scheme, current, target, only_newer, allowed
            (Esh, "1.0", "1.1", true, true),
            (Esh, "1.1", "1.0", true, false),
            (Esh, "1.1", "1.1", true, false),
            (Esh, "1.1", "1-1-0", true, false),
            (Esh, "1.1", "1.0", false, true),
            (Esh, "1.1", "1.1", false, true),
            (Particle, "9", "10", true, true),
            (Particle, "10", "9", true, false),
            (Semver, "1.0.0-rc.1", "1.0.0", true, true),
            (Semver, "1.0.0", "1.0.0-rc.1", false, true),
            (Espressif, "b1.0.5t7(a)", "v1.0.5t7(o)", true, true),
            (Espressif, "v1.0.5t7(a)", "b1.0.5t7(a)", true, false),
        ];
        for &(scheme, current, target, only_newer, allowed) in rows {
            let got = check_upgrade(scheme, current, target, None, only_newer);
            if allowed {
                assert_eq!(got, Ok(()), "{scheme}: {current} -> {target}");
            } else {
                assert_eq!(
                    got,
                    Err(UpgradeRefusal::NotNewer {
                        current: current.into(),
                        target: target.into()
                    }),
                    "{scheme}: {current} -> {target}"
                );
            }
        }
        let msg = check_upgrade(Semver, "1.2.0", "1.0.0", None, true)
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "target version 1.0.0 is not newer than current 1.2.0");
    }

    #[test]
    fn check_upgrade_prerequisites() {
        let at_least = |v: &str| Prerequisite::AtLeast(v.into());
        let one_of = |vs: &[&str]| Prerequisite::OneOf(vs.iter().map(|v| v.to_string()).collect());
        let rows: &[(VersionScheme, &str, Prerequisite, Option<&str>)] = &[
            // scheme, current, prerequisite, refusal's `required` (None: met)
            (Esh, "1.2", at_least("1.2"), None),
            (Esh, "1.3", at_least("1.2"), None),
            (Esh, "1.1", at_least("1.2"), Some(">= 1.2")),
            (Esh, "1-1", one_of(&["1.0", "1.1"]), None),
            (Esh, "1.2", one_of(&["1.0", "1.1"]), Some("one of 1.0, 1.1")),
            (Esh, "1.2", one_of(&[]), Some("one of (no versions listed)")),
            (Particle, "5", at_least("10"), Some(">= 10")),
            (Semver, "1.0.0+a", one_of(&["1.0.0"]), None),
            (Espressif, "v1.0.1t1(a)", at_least("v1.0.0t1(a)"), None),
            (
                Espressif,
                "b1.0.0t1(a)",
                at_least("v1.0.0t1(a)"),
                Some(">= v1.0.0t1(a)"),
            ),
        ];
        for (scheme, current, prerequisite, refusal) in rows {
            let target = match scheme {
                Esh => "9.9",
                Particle => "99",
                Semver => "9.9.9",
                Espressif => "v9.9.9t1(a)",
            };
            let got = check_upgrade(*scheme, current, target, Some(prerequisite), true);
            let want = match refusal {
                None => Ok(()),
                Some(required) => Err(UpgradeRefusal::PrerequisiteNotMet {
                    current: current.to_string(),
                    required: required.to_string(),
                }),
            };
            assert_eq!(got, want, "{scheme}: {current} {prerequisite:?}");
        }
        let msg = check_upgrade(Esh, "1.0", "2.0", Some(&at_least("1.2")), true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "prerequisite not met: current version 1.0 is not >= 1.2"
        );
    }

    #[test]
    fn check_upgrade_espressif_compatibility() {
        let incompatible = |current: &str, target: &str, only_newer: bool| {
            matches!(
                check_upgrade(Espressif, current, target, None, only_newer),
                Err(UpgradeRefusal::Incompatible { .. })
            )
        };
        assert!(incompatible("v1.0.0t45772(a)", "v1.1.0t12335(a)", true));
        assert!(incompatible("v1.0.0t45772(a)", "v1.1.0t45772(n)", true));
        assert!(incompatible("v1.0.0t45772(a)", "v1.1.0t45772(n)", false));
        assert!(incompatible("v1.1.0t45772(a)", "v1.0.0t45772(n)", false));
        assert_eq!(
            check_upgrade(Espressif, "v1.0.0t45772(n)", "v1.1.0t45772(l)", None, true),
            Ok(())
        );
        let msg = check_upgrade(Espressif, "v1.0.0t1(a)", "v1.1.0t2(a)", None, true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "incompatible firmware: target version v1.1.0t2(a) is for ptype 2, \
             current v1.0.0t1(a) is ptype 1"
        );
    }

    #[test]
    fn check_upgrade_invalid_versions() {
        let rows: &[(VersionScheme, &str, &str, Option<Prerequisite>, &str)] = &[
            // scheme, current, target, prerequisite, the invalid string
            (Particle, "1.0", "2", None, "1.0"),
            (Particle, "1", "-2", None, "-2"),
            (Semver, "1.0.0", "2.0", None, "2.0"),
            (Esh, "", "1.0", None, ""),
            (Espressif, "v1.0.0t1(a)", "v1.1.0", None, "v1.1.0"),
            (
                Particle,
                "1",
                "2",
                Some(Prerequisite::AtLeast("x".into())),
                "x",
            ),
            (
                Particle,
                "1",
                "2",
                Some(Prerequisite::OneOf(vec!["1".into(), "y".into()])),
                "y",
            ),
        ];
        for (scheme, current, target, prerequisite, bad) in rows {
            match check_upgrade(*scheme, current, target, prerequisite.as_ref(), false) {
                Err(UpgradeRefusal::Invalid(e)) => {
                    assert_eq!((e.scheme, e.version.as_str()), (*scheme, *bad));
                }
                other => panic!("{scheme}: {current} -> {target}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_name_string_scheme_and_reason() {
        let err = Particle.validate("1.0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"1.0\" is not a valid particle version: must be a non-negative decimal integer"
        );
        let long = "é".repeat(1000);
        let err = Semver.validate(&long).unwrap_err();
        assert_eq!(err.version.chars().count(), VersionError::MAX_SHOWN + 1);
    }

    #[test]
    fn odd_input_never_panics() {
        let odd = [
            "",
            "v",
            "b",
            "t",
            "()",
            "v.t(",
            "vt()",
            "v1.2.3t",
            "b...t(a)",
            "é",
            "v\u{0}",
            "\u{feff}1",
            "١٢٣",
            "🦀.1",
            "-",
            "1-",
            "v1.0.0-é+é",
            "18446744073709551616",
        ];
        for scheme in [Esh, Espressif, Particle, Semver] {
            for a in odd {
                let _ = scheme.validate(a);
                for b in odd {
                    let _ = scheme.compare(a, b);
                    let _ = check_upgrade(scheme, a, b, None, true);
                }
            }
        }
    }
}
