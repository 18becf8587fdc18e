//! The client commands of `nexus`: they talk to a Nexus server over HTTP only, with a board
//! token or an agent key (`NEXUS_URL`, `NEXUS_TOKEN`, or `--url`, `--token`). Request bodies
//! are the server's own request types (`nexus_api::requests`), so a command cannot send a
//! field the server does not take.
//!
//! Output is an aligned table for people (times in the viewer's zone, schedules in plain
//! language) or, with `--json`, exactly the API's JSON. Exit codes: 0 done, 2 usage, 3 not
//! found, 4 refused (the server refused the request: credentials, permission, state or
//! validation), 5 server or network failure. Errors are one line on standard error, with the
//! API's error code. The token is never printed.

mod commands;
mod http;
mod show;

use std::collections::{BTreeMap, BTreeSet};

pub(crate) use commands::SPECS;

/// How a client command ended, as an exit code and a line for standard error.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command line is wrong: exit 2.
    Usage(String),
    /// The server has no such resource: exit 3.
    NotFound(String),
    /// The server refused the request: exit 4.
    Refused(String),
    /// The server failed, or could not be reached: exit 5.
    Server(String),
}

impl Failure {
    /// The process exit code.
    pub(crate) fn code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::NotFound(_) => 3,
            Self::Refused(_) => 4,
            Self::Server(_) => 5,
        }
    }

    fn line(&self) -> &str {
        match self {
            Self::Usage(line) | Self::NotFound(line) | Self::Refused(line) | Self::Server(line) => {
                line
            }
        }
    }
}

/// One client command: its words, arguments, what it does, an example, and its own flags
/// (`true`: the flag takes a value).
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) words: &'static str,
    pub(crate) arguments: &'static str,
    pub(crate) about: &'static str,
    pub(crate) example: &'static str,
    pub(crate) flags: &'static [(&'static str, bool)],
}

/// Flags every client command takes (`true`: takes a value).
const GLOBAL_FLAGS: [(&str, bool); 5] = [
    ("--url", true),
    ("--token", true),
    ("--json", false),
    ("--tz", true),
    ("--help", false),
];

/// A command line after its command words: positional arguments, flags with values, switches.
#[derive(Debug, Default)]
pub(crate) struct Args {
    positional: Vec<String>,
    values: BTreeMap<&'static str, String>,
    switches: BTreeSet<&'static str>,
}

impl Args {
    /// The positional argument `index`, named `name` in the error when it is missing.
    pub(crate) fn arg(&self, index: usize, name: &str) -> Result<&str, Failure> {
        self.positional
            .get(index)
            .map(String::as_str)
            .ok_or_else(|| Failure::Usage(format!("missing argument: {name}")))
    }

    /// The value of `--flag`, if given.
    pub(crate) fn value(&self, flag: &str) -> Option<&str> {
        self.values.get(flag).map(String::as_str)
    }

    /// Whether `--flag` was given.
    pub(crate) fn switch(&self, flag: &str) -> bool {
        self.switches.contains(flag)
    }
}

/// Whether `args` names a client command (its first word is one of theirs).
pub(crate) fn is_client_command(args: &[String]) -> bool {
    args.first().is_some_and(|first| {
        SPECS
            .iter()
            .any(|s| s.words.split(' ').next() == Some(first.as_str()))
    })
}

/// The command `args` names and its parsed arguments; a usage failure (with the command's
/// help) when they do not fit.
fn parse(args: &[String]) -> Result<(&'static Spec, Args), Failure> {
    let group = args.first().map(String::as_str).unwrap_or_default();
    let action = args.get(1).map(String::as_str).unwrap_or_default();
    let words = format!("{group} {action}");
    let Some(spec) = SPECS.iter().find(|s| s.words == words) else {
        return Err(Failure::Usage(format!(
            "unknown command \"{}\"\n\n{}",
            words.trim(),
            group_help(group)
        )));
    };
    let mut parsed = Args::default();
    let mut rest = args[2..].iter();
    while let Some(arg) = rest.next() {
        if !arg.starts_with("--") {
            parsed.positional.push(arg.clone());
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        let Some(&(flag, takes_value)) = spec
            .flags
            .iter()
            .chain(&GLOBAL_FLAGS)
            .find(|(f, _)| *f == name)
        else {
            return Err(Failure::Usage(format!(
                "unknown flag {name} for \"{}\"\n\n{}",
                spec.words,
                help(spec)
            )));
        };
        if takes_value {
            let value = inline
                .or_else(|| rest.next().cloned())
                .ok_or_else(|| Failure::Usage(format!("{flag} needs a value")))?;
            parsed.values.insert(flag, value);
        } else {
            parsed.switches.insert(flag);
        }
    }
    Ok((spec, parsed))
}

/// The help of one command.
pub(crate) fn help(spec: &Spec) -> String {
    let flags = if spec.flags.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = spec
            .flags
            .iter()
            .map(|(f, v)| {
                if *v {
                    format!("{f} …")
                } else {
                    (*f).to_owned()
                }
            })
            .collect();
        format!("\nFlags: {}", names.join(", "))
    };
    format!(
        "nexus {} {}\n\n{}\n{flags}\nEvery command: --url URL, --token TOKEN (or NEXUS_URL, NEXUS_TOKEN), --json, --tz ZONE, --help\n\nExample:\n  {}",
        spec.words, spec.arguments, spec.about, spec.example
    )
}

/// The commands of a group (`routines`), or of every group.
pub(crate) fn group_help(group: &str) -> String {
    let lines: Vec<String> = SPECS
        .iter()
        .filter(|s| group.is_empty() || s.words.starts_with(&format!("{group} ")))
        .map(|s| {
            format!(
                "  nexus {:<20} {}",
                s.words,
                s.about.lines().next().unwrap_or("")
            )
        })
        .collect();
    if lines.is_empty() {
        return group_help("");
    }
    format!("Client commands (each with --help):\n{}", lines.join("\n"))
}

/// Prints a failure as one line starting `error: ` (a usage failure may add the help after
/// it); returns its exit code.
fn fail(failure: &Failure) -> u8 {
    let line = failure.line();
    if line.starts_with("error: ") {
        eprintln!("{line}");
    } else {
        eprintln!("error: {line}");
    }
    failure.code()
}

/// Runs a client command; returns the process exit code.
pub(crate) async fn run(args: &[String]) -> u8 {
    let (spec, parsed) = match parse(args) {
        Ok(parsed) => parsed,
        Err(failure) => return fail(&failure),
    };
    if parsed.switch("--help") {
        println!("{}", help(spec));
        return 0;
    }
    // The one TLS crypto provider of the build, for `https://` servers.
    nexus_shared::telemetry::install_tls_provider();
    let result = match http::Api::from_args(&parsed) {
        Ok(api) => {
            let out = show::Out::new(parsed.switch("--json"), parsed.value("--tz"));
            match out {
                Ok(out) => commands::execute(spec, &parsed, &api, &out).await,
                Err(failure) => Err(failure),
            }
        }
        Err(failure) => Err(failure),
    };
    match result {
        Ok(()) => 0,
        Err(failure) => fail(&failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn flags_values_and_positionals_are_parsed_per_command() {
        let (spec, parsed) = parse(&args(
            "routines run 0193 --payload {} --json --url=http://x",
        ))
        .expect("parsed");
        assert_eq!(spec.words, "routines run");
        assert_eq!(parsed.arg(0, "ROUTINE").expect("id"), "0193");
        assert_eq!(parsed.value("--payload"), Some("{}"));
        assert_eq!(parsed.value("--url"), Some("http://x"));
        assert!(parsed.switch("--json"));
        for wrong in [
            "routines fly",
            "routines list --nope",
            "routines run 0193 --payload",
        ] {
            let failure = parse(&args(wrong)).expect_err(wrong);
            assert_eq!(failure.code(), 2, "{wrong}");
        }
    }

    #[test]
    fn every_command_has_help_with_an_example() {
        for spec in SPECS {
            assert!(
                spec.example.contains(&format!("nexus {}", spec.words)),
                "{}",
                spec.words
            );
            assert!(help(spec).contains(spec.about), "{}", spec.words);
        }
    }
}
