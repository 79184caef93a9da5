//! Text a server sends about an offer — versions, titles, file names — checked
//! where it enters, before it becomes part of a [`crate::model::Firmware`]. Such
//! text travels on: into `FOTA_VERSION` for update commands, into log lines and
//! reports, into file names. A compromised server must not be able to smuggle a
//! second log line (newline), a shell command (`$(...)` for a script that `eval`s
//! the version) or a path (`../`) through it, so an offer with bad text is refused
//! and the reason never repeats the text itself.

/// The longest version, title or file name accepted, in characters.
pub const MAX_CHARS: usize = 128;

/// Characters a shell treats specially; a version never needs them.
const SHELL_SPECIAL: &[char] = &['$', '`', '\\', ';', '|', '&', '<', '>', '"', '\''];

/// Why a server string was refused. The message names the field and the rule,
/// never the string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{0}: empty")]
    Empty(&'static str),
    #[error("{what}: {chars} characters (at most {MAX_CHARS})")]
    TooLong { what: &'static str, chars: usize },
    #[error("{what}: control character U+{code:04X} at character {at}")]
    Control {
        what: &'static str,
        code: u32,
        at: usize,
    },
    #[error("{what}: shell character {found:?} at character {at}")]
    Shell {
        what: &'static str,
        found: char,
        at: usize,
    },
    #[error("{0}: contains '/'")]
    Slash(&'static str),
    #[error("{0}: \".\" and \"..\" are not file names")]
    Dots(&'static str),
}

/// A firmware version: [`text`] rules, and no shell character
/// (`` $ ` \ ; | & < > " ' ``).
pub fn version(value: &str) -> Result<(), TextError> {
    const WHAT: &str = "version";
    text(WHAT, value)?;
    match value
        .chars()
        .enumerate()
        .find(|(_, c)| SHELL_SPECIAL.contains(c))
    {
        Some((at, found)) => Err(TextError::Shell {
            what: WHAT,
            found,
            at: at + 1,
        }),
        None => Ok(()),
    }
}

/// A package title or name: [`text`] rules.
pub fn title(value: &str) -> Result<(), TextError> {
    text("title", value)
}

/// A file name: [`text`] rules, no `/`, not `.` or `..`.
pub fn file_name(value: &str) -> Result<(), TextError> {
    const WHAT: &str = "file name";
    text(WHAT, value)?;
    if value.contains('/') {
        return Err(TextError::Slash(WHAT));
    }
    if value == "." || value == ".." {
        return Err(TextError::Dots(WHAT));
    }
    Ok(())
}

/// Not empty, at most [`MAX_CHARS`] characters, no control character.
pub fn text(what: &'static str, value: &str) -> Result<(), TextError> {
    if value.is_empty() {
        return Err(TextError::Empty(what));
    }
    let chars = value.chars().count();
    if chars > MAX_CHARS {
        return Err(TextError::TooLong { what, chars });
    }
    match value.chars().enumerate().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(TextError::Control {
            what,
            code: u32::from(c),
            at: at + 1,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_text_passes() {
        for v in ["1.0", "2.0.1-rc.1+build.5", "v3 beta", "Ü-1"] {
            assert_eq!(version(v), Ok(()), "{v}");
        }
        assert_eq!(title("ESP firmware (main)"), Ok(()));
        assert_eq!(file_name("fw-2.0.bin"), Ok(()));
        assert_eq!(version(&"9".repeat(MAX_CHARS)), Ok(()));
    }

    #[test]
    fn hostile_text_is_refused_without_repeating_it() {
        let long = "x".repeat(200);
        let cases: &[(Result<(), TextError>, &str)] = &[
            (
                version("2.0\nfake log line"),
                "version: control character U+000A at character 4",
            ),
            (
                version("1.0$(reboot)"),
                "version: shell character '$' at character 4",
            ),
            (version(&long), "version: 200 characters (at most 128)"),
            (version(""), "version: empty"),
            (
                title("t\u{1b}[31m"),
                "title: control character U+001B at character 2",
            ),
            (title(&long), "title: 200 characters (at most 128)"),
            (file_name("../../etc/passwd"), "file name: contains '/'"),
            (
                file_name(".."),
                "file name: \".\" and \"..\" are not file names",
            ),
            (
                file_name("a\u{7f}"),
                "file name: control character U+007F at character 2",
            ),
        ];
        for (result, message) in cases {
            let err = result.clone().unwrap_err().to_string();
            assert_eq!(err, *message);
        }
    }
}
