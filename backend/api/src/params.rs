//! Every hyper-parameter defined once: name, type, default, range and help text. The CLI
//! flags, the REST schema, validation and the dashboard's form are all generated from
//! [`PARAMS`]; the defaults are the reference scripts' (light-peft-spec §3.5, §6, §7).

use serde::{Deserialize, Serialize};

/// What values a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParamKind {
    /// An integer in `[min, max]`.
    Int {
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A real number in `[min, max]` (or `(min, max]` when `min_exclusive`).
    Float {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
        /// Whether `min` itself is excluded.
        min_exclusive: bool,
    },
    /// true or false.
    Bool,
    /// One of a fixed set of words.
    Choice {
        /// The allowed words.
        options: &'static [&'static str],
    },
    /// A comma-separated list of non-empty words.
    List,
    /// An optional integer seed; empty means none.
    OptionalSeed,
}

/// One hyper-parameter's definition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ParamSpec {
    /// snake_case name, used as JSON key; the CLI flag is the kebab-case form.
    pub name: &'static str,
    /// Which part of the pipeline reads it.
    pub section: &'static str,
    /// Accepted values.
    pub kind: ParamKind,
    /// One-line help.
    pub help: &'static str,
}

/// A rejected value, naming the parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamError {
    /// The parameter.
    pub field: String,
    /// Why the value is rejected.
    pub message: String,
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ParamError {}

/// A type a parameter can have.
trait ParamValue: Sized {
    fn parse(text: &str, kind: &ParamKind) -> Result<Self, String>;
    fn check(&self, kind: &ParamKind) -> Result<(), String>;
    fn render(&self) -> String;
}

impl ParamValue for u64 {
    fn parse(text: &str, kind: &ParamKind) -> Result<Self, String> {
        let v: u64 = text
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not a whole number"))?;
        v.check(kind)?;
        Ok(v)
    }
    fn check(&self, kind: &ParamKind) -> Result<(), String> {
        match kind {
            ParamKind::Int { min, max } if *self < *min || *self > *max => {
                Err(format!("{self} is outside [{min}, {max}]"))
            }
            _ => Ok(()),
        }
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl ParamValue for usize {
    fn parse(text: &str, kind: &ParamKind) -> Result<Self, String> {
        let v = u64::parse(text, kind)?;
        usize::try_from(v).map_err(|_| format!("{v} is too large"))
    }
    fn check(&self, kind: &ParamKind) -> Result<(), String> {
        (*self as u64).check(kind)
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl ParamValue for f64 {
    fn parse(text: &str, kind: &ParamKind) -> Result<Self, String> {
        let v: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not a number"))?;
        v.check(kind)?;
        Ok(v)
    }
    fn check(&self, kind: &ParamKind) -> Result<(), String> {
        if !self.is_finite() {
            return Err(format!("{self} is not a finite number"));
        }
        match kind {
            ParamKind::Float {
                min,
                max,
                min_exclusive,
            } => {
                let low_ok = if *min_exclusive {
                    *self > *min
                } else {
                    *self >= *min
                };
                if !low_ok || *self > *max {
                    let open = if *min_exclusive { "(" } else { "[" };
                    return Err(format!("{self} is outside {open}{min}, {max}]"));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl ParamValue for bool {
    fn parse(text: &str, _: &ParamKind) -> Result<Self, String> {
        match text.trim() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            other => Err(format!("`{other}` is not true or false")),
        }
    }
    fn check(&self, _: &ParamKind) -> Result<(), String> {
        Ok(())
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl ParamValue for String {
    fn parse(text: &str, kind: &ParamKind) -> Result<Self, String> {
        let v = match kind {
            ParamKind::List => text.split(',').map(str::trim).collect::<Vec<_>>().join(","),
            _ => text.trim().to_string(),
        };
        v.check(kind)?;
        Ok(v)
    }
    fn check(&self, kind: &ParamKind) -> Result<(), String> {
        match kind {
            ParamKind::Choice { options } if !options.contains(&self.as_str()) => {
                Err(format!("`{self}` is not one of {}", options.join(", ")))
            }
            ParamKind::List if self.split(',').any(|w| w.trim().is_empty()) => {
                Err("needs one or more comma-separated, non-empty words".into())
            }
            _ => Ok(()),
        }
    }
    fn render(&self) -> String {
        self.clone()
    }
}

impl ParamValue for Option<u64> {
    fn parse(text: &str, kind: &ParamKind) -> Result<Self, String> {
        match text.trim() {
            "" | "none" => Ok(None),
            t => Ok(Some(u64::parse(t, kind)?)),
        }
    }
    fn check(&self, _: &ParamKind) -> Result<(), String> {
        Ok(())
    }
    fn render(&self) -> String {
        self.map(|v| v.to_string()).unwrap_or_default()
    }
}

macro_rules! hyperparams {
    ($( $section:literal {
        $( #[doc = $help:literal] $name:ident : $ty:ty = $default:expr, $kind:expr; )*
    } )*) => {
        /// Every hyper-parameter of a lightpeft run. Serialised with snake_case keys; missing
        /// keys take their defaults, unknown keys are rejected.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(default, deny_unknown_fields)]
        pub struct Hyperparams {
            $( $( #[doc = $help] pub $name: $ty, )* )*
        }

        impl Default for Hyperparams {
            fn default() -> Self {
                Hyperparams { $( $( $name: $default, )* )* }
            }
        }

        /// The definition of every field of [`Hyperparams`], in display order.
        pub const PARAMS: &[ParamSpec] = &[
            $( $( ParamSpec {
                name: stringify!($name),
                section: $section,
                kind: $kind,
                help: $help.trim_ascii(),
            }, )* )*
        ];

        impl Hyperparams {
            /// Sets `name` from its text form, checking type and range.
            pub fn set(&mut self, name: &str, text: &str) -> Result<(), ParamError> {
                let spec = spec(name)?;
                let fail = |message| ParamError { field: name.to_string(), message };
                match name {
                    $( $( stringify!($name) => {
                        self.$name = <$ty as ParamValue>::parse(text, &spec.kind).map_err(fail)?;
                    } )* )*
                    _ => unreachable!("spec() knows every name"),
                }
                Ok(())
            }

            /// The text form of `name`'s value.
            pub fn get(&self, name: &str) -> Result<String, ParamError> {
                spec(name)?;
                Ok(match name {
                    $( $( stringify!($name) => self.$name.render(), )* )*
                    _ => unreachable!("spec() knows every name"),
                })
            }

            /// Every value out of range, one error per field (for deserialised input).
            pub fn validate(&self) -> Result<(), Vec<ParamError>> {
                let mut errors = Vec::new();
                $( $(
                    if let Err(message) = self.$name.check(&spec(stringify!($name)).expect("listed").kind) {
                        errors.push(ParamError { field: stringify!($name).into(), message });
                    }
                )* )*
                if errors.is_empty() { Ok(()) } else { Err(errors) }
            }
        }
    };
}

fn spec(name: &str) -> Result<&'static ParamSpec, ParamError> {
    PARAMS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ParamError {
            field: name.to_string(),
            message: "unknown hyper-parameter".into(),
        })
}

const fn int(min: u64, max: u64) -> ParamKind {
    ParamKind::Int { min, max }
}

const fn closed(min: f64, max: f64) -> ParamKind {
    ParamKind::Float {
        min,
        max,
        min_exclusive: false,
    }
}

const fn positive(max: f64) -> ParamKind {
    ParamKind::Float {
        min: 0.0,
        max,
        min_exclusive: true,
    }
}

/// The reference's six LoRA targets (spec §2.1); `output.dense` matches two modules a layer.
pub const ALL_TARGETS: &str = "query,key,value,output.dense,intermediate.dense";

hyperparams! {
    "data" {
        /// Tokens per example after truncation (batches are padded to their longest example).
        max_len: usize = 128, int(8, 512);
        /// Examples per optimiser step.
        batch_size: usize = 32, int(1, 4096);
        /// Examples per evaluation batch (does not change results).
        eval_batch_size: usize = 64, int(1, 4096);
        /// Use at most this many training examples, taken at an even stride (0 = all).
        max_train_examples: usize = 0, int(0, 100_000_000);
        /// Use at most this many dev examples, taken at an even stride (0 = all).
        max_dev_examples: usize = 0, int(0, 100_000_000);
        /// Seed of data order, dropout and new weights.
        seed: u64 = 42, int(0, u64::MAX);
        /// Batch training examples of similar length together: less padding, faster steps, a different data order (lightpeft extension; the reference batches at random).
        group_by_length: bool = false, ParamKind::Bool;
    }
    "optimiser" {
        /// Peak learning rate of AdamW, reached after warm-up, then decayed linearly to 0.
        lr: f64 = 3e-4, positive(1.0);
        /// Decoupled weight decay on PEFT and classifier weights (not biases or masks).
        weight_decay: f64 = 0.0, closed(0.0, 1.0);
        /// Fraction of the steps spent warming the learning rate up from 0.
        warmup_ratio: f64 = 0.0, closed(0.0, 0.5);
        /// Global gradient-norm clip.
        max_grad_norm: f64 = 1.0, positive(1e6);
    }
    "peft" {
        /// Which PEFT module to train: lora or adapter (bottleneck).
        peft_method: String = "lora".into(), ParamKind::Choice { options: &["lora", "adapter"] };
        /// Comma-separated module-name suffixes to wrap (query, key, value, output.dense, intermediate.dense, attention.output.dense).
        targets: String = ALL_TARGETS.into(), ParamKind::List;
        /// LoRA rank r.
        lora_r: usize = 8, int(1, 1024);
        /// LoRA alpha; the branch is scaled by alpha / r.
        lora_alpha: f64 = 16.0, positive(1e4);
        /// Dropout on the LoRA branch's input.
        lora_dropout: f64 = 0.05, closed(0.0, 0.9);
        /// Bottleneck width of an adapter.
        adapter_size: usize = 8, int(1, 4096);
        /// Dropout on the adapter's input.
        adapter_dropout: f64 = 0.1, closed(0.0, 0.9);
    }
    "estimation" {
        /// Optimiser steps of stage 1 (the reference uses 800).
        estimation_steps: usize = 800, int(1, 1_000_000);
        /// λ of the L1 penalty, summed over every mask scalar.
        l1_coef: f64 = 1e-4, closed(0.0, 1.0);
        /// Learning-rate multiplier of the head masks.
        head_mask_lr_coef: f64 = 1.0, positive(1e4);
        /// Learning-rate multiplier of the FFN-neuron masks.
        neuron_mask_lr_coef: f64 = 1.0, positive(1e4);
    }
    "pruning" {
        /// Fraction of attention heads removed (0.333333333 prunes 5 of 16, as the reference).
        head_ratio: f64 = 0.333333333, closed(0.0, 1.0);
        /// Fraction of FFN neurons removed.
        ffn_ratio: f64 = 0.333333333, closed(0.0, 1.0);
        /// Fraction of PEFT modules removed, ranked by importance ratio.
        module_ratio: f64 = 0.75, closed(0.0, 1.0);
        /// Fraction of the surviving modules' rank dimensions removed.
        rank_ratio: f64 = 0.5, closed(0.0, 1.0);
        /// Rank heads within each layer (reference) or over all layers (lightpeft extension).
        head_method: String = "layerwise".into(), ParamKind::Choice { options: &["layerwise", "global"] };
        /// Rank FFN neurons over all layers (the scripts) or within each layer.
        ffn_method: String = "global".into(), ParamKind::Choice { options: &["global", "layerwise"] };
        /// Rank rank dimensions over all surviving modules (the scripts) or per module.
        rank_method: String = "global".into(), ParamKind::Choice { options: &["global", "per_module"] };
        /// Keep at least one head and one neuron per layer (lightpeft extension; the reference may empty a layer).
        keep_at_least_one: bool = false, ParamKind::Bool;
        /// Random-pruning ablation: prune the same counts at random with this seed (empty = importance-based).
        random_seed: Option<u64> = None, ParamKind::OptionalSeed;
    }
    "finetune" {
        /// Passes over the training data in stage 2 and in the baseline.
        epochs: usize = 10, int(1, 1000);
    }
}

/// Named starting points for the form and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The reference scripts' Light-PEFT recipe (spec §3.5, §6): 800 estimation steps,
    /// batch 32, lr 3e-4, 10 stage-2 epochs.
    Paper,
    /// The reference's vanilla LoRA recipe (spec §7): q,v targets, warm-up 0.06, weight
    /// decay 0.1, 5 epochs.
    VanillaReference,
    /// A demo that finishes in a few minutes on a 2-core CPU with MiniLM: short sequences,
    /// 40 estimation steps, 1 epoch.
    QuickDemo,
}

impl Preset {
    /// What the preset is for, in one sentence.
    pub fn description(self) -> &'static str {
        match self {
            Preset::Paper => {
                "The paper's Light-PEFT recipe: 800 estimation steps, batch 32, lr 3e-4, 10 stage-2 epochs."
            }
            Preset::VanillaReference => {
                "The reference's vanilla LoRA recipe: query,value targets, warm-up 0.06, weight decay 0.1, 5 epochs."
            }
            Preset::QuickDemo => {
                "A few minutes on a 2-core CPU with MiniLM: 48 tokens, 1,600 train / 300 dev examples, 40 estimation steps, 1 epoch."
            }
        }
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Paper => "paper",
            Preset::VanillaReference => "vanilla_reference",
            Preset::QuickDemo => "quick_demo",
        }
    }

    /// Every preset.
    pub const ALL: [Preset; 3] = [Preset::Paper, Preset::VanillaReference, Preset::QuickDemo];

    /// The hyper-parameters of this preset.
    pub fn params(self) -> Hyperparams {
        let base = Hyperparams::default();
        match self {
            Preset::Paper => base,
            Preset::VanillaReference => Hyperparams {
                targets: "query,value".into(),
                warmup_ratio: 0.06,
                weight_decay: 0.1,
                epochs: 5,
                ..base
            },
            Preset::QuickDemo => Hyperparams {
                max_len: 48,
                batch_size: 16,
                max_train_examples: 1600,
                max_dev_examples: 300,
                estimation_steps: 40,
                epochs: 1,
                ..base
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_recipe_and_pass_validation() {
        let p = Hyperparams::default();
        assert_eq!(
            (p.lr, p.batch_size, p.estimation_steps, p.epochs),
            (3e-4, 32, 800, 10)
        );
        assert_eq!((p.lora_r, p.lora_alpha, p.lora_dropout), (8, 16.0, 0.05));
        assert_eq!(p.head_ratio, 0.333333333);
        for preset in Preset::ALL {
            assert_eq!(preset.params().validate(), Ok(()), "{preset:?}");
        }
    }

    #[test]
    fn every_field_has_a_spec_with_help_and_round_trips_through_text() {
        let p = Hyperparams::default();
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json.as_object().unwrap().len(), PARAMS.len());
        for spec in PARAMS {
            assert!(!spec.help.is_empty(), "{}", spec.name);
            let text = p.get(spec.name).unwrap();
            let mut q = Hyperparams::default();
            q.set(spec.name, &text).unwrap();
            assert_eq!(q, p, "{}", spec.name);
        }
    }

    #[test]
    fn bad_values_are_rejected_with_the_field_named() {
        let mut p = Hyperparams::default();
        for (name, value, expect) in [
            ("lr", "0", "outside (0, 1]"),
            ("lr", "abc", "not a number"),
            ("head_ratio", "1.5", "outside [0, 1]"),
            ("batch_size", "0", "outside [1, 4096]"),
            ("batch_size", "-3", "not a whole number"),
            ("peft_method", "prefix", "not one of lora, adapter"),
            ("targets", "query,,value", "non-empty"),
            ("keep_at_least_one", "maybe", "not true or false"),
            ("nonsense", "1", "unknown hyper-parameter"),
        ] {
            let err = p.set(name, value).unwrap_err();
            assert_eq!(err.field, name);
            assert!(
                err.message.contains(expect),
                "{name}={value}: {}",
                err.message
            );
        }
        assert_eq!(p, Hyperparams::default(), "failed sets change nothing");
        let parsed: Hyperparams = serde_json::from_str(r#"{"lr": 2.0, "epochs": 0}"#).unwrap();
        let errors = parsed.validate().unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["lr", "epochs"]);
        assert!(serde_json::from_str::<Hyperparams>(r#"{"lrr": 1}"#).is_err());
    }
}
