//! Command-line flags generated from the hyper-parameter table: one `--kebab-name` per entry
//! of [`lightpeft_api::PARAMS`], with its help, type and default.

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use lightpeft_api::{Hyperparams, PARAMS, ParamKind, Preset};

use crate::error::{Error, Result};

/// The hyper-parameters given on the command line, applied over a preset.
#[derive(Debug, Clone, Default)]
pub struct ParamArgs {
    /// `(name, value)` in table order.
    pub given: Vec<(&'static str, String)>,
}

fn flag(name: &str) -> String {
    name.replace('_', "-")
}

fn value_name(kind: &ParamKind) -> &'static str {
    match kind {
        ParamKind::Int { .. } | ParamKind::OptionalSeed => "INT",
        ParamKind::Float { .. } => "NUM",
        ParamKind::Bool => "BOOL",
        ParamKind::Choice { .. } => "WORD",
        ParamKind::List => "LIST",
    }
}

impl Args for ParamArgs {
    fn augment_args(cmd: Command) -> Command {
        let defaults = Hyperparams::default();
        PARAMS.iter().fold(cmd, |cmd, spec| {
            let default = defaults.get(spec.name).expect("every spec has a value");
            let range = match spec.kind {
                ParamKind::Int { min, max } => format!(" [{min}..={max}]"),
                ParamKind::Float {
                    min,
                    max,
                    min_exclusive,
                } => format!(" [{}{min}, {max}]", if min_exclusive { ">" } else { "" }),
                ParamKind::Choice { options } => format!(" [{}]", options.join("|")),
                _ => String::new(),
            };
            cmd.arg(
                Arg::new(spec.name)
                    .long(flag(spec.name))
                    .value_name(value_name(&spec.kind))
                    .help(format!("{}{range} (default: {default})", spec.help))
                    .help_heading(format!("Hyper-parameters: {}", spec.section)),
            )
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ParamArgs {
    fn from_arg_matches(matches: &ArgMatches) -> std::result::Result<Self, clap::Error> {
        let given = PARAMS
            .iter()
            .filter_map(|spec| {
                matches
                    .get_one::<String>(spec.name)
                    .map(|v| (spec.name, v.clone()))
            })
            .collect();
        Ok(ParamArgs { given })
    }

    fn update_from_arg_matches(
        &mut self,
        matches: &ArgMatches,
    ) -> std::result::Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl ParamArgs {
    /// The preset's values with the given flags applied and checked.
    pub fn resolve(&self, preset: Preset) -> Result<Hyperparams> {
        let mut params = preset.params();
        for (name, value) in &self.given {
            params.set(name, value).map_err(Error::Param)?;
        }
        Ok(params)
    }
}
