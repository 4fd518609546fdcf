//! The one device setting: parsed once at the edge (`--device`), then handed to every model
//! and checkpoint load of a run, so no load picks its own.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where tensors live and kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// The host CPU (every core rayon is given). The engine's hand-written kernels are CPU
    /// kernels, so this is the only device a build offers today.
    #[default]
    Cpu,
}

impl DeviceChoice {
    /// Every accepted spelling, for help texts and error messages.
    pub const NAMES: &'static [&'static str] = &["cpu"];

    /// The engine's device for this choice.
    pub fn device(self) -> Result<lightpeft_engine::Device> {
        match self {
            DeviceChoice::Cpu => Ok(lightpeft_engine::Device::Cpu),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            other => Err(Error::Usage(format!(
                "device `{other}`: this build runs on the CPU only (expected one of: {})",
                DeviceChoice::NAMES.join(", ")
            ))),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChoice::Cpu => "cpu",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_in_any_case_and_round_trips() {
        for text in ["cpu", "CPU", " Cpu "] {
            assert_eq!(text.parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        }
        assert_eq!(DeviceChoice::default().to_string(), "cpu");
        assert!(DeviceChoice::Cpu.device().unwrap().is_cpu());
    }

    #[test]
    fn other_devices_are_refused_with_the_choices() {
        let e = "cuda:0".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(e.contains("cuda:0") && e.contains("cpu"), "{e}");
    }
}
