//! The one device setting: parsed once at the edge (`--device`), then handed to every model
//! and checkpoint load of a run, so no load picks its own.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Where tensors live and kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The host CPU (every core rayon is given), where the engine's fused kernels run.
    #[default]
    Cpu,
    /// NVIDIA GPU number N through candle's CUDA backend (a binary built with the `cuda`
    /// feature). The engine's fused CPU kernels fall back to composed candle ops there.
    Cuda(usize),
}

impl DeviceChoice {
    /// Every accepted spelling, for help texts and error messages.
    pub const NAMES: &'static [&'static str] = &["cpu", "cuda", "cuda:N"];

    /// Whether this binary was built with candle's CUDA backend.
    pub fn cuda_built() -> bool {
        lightpeft_engine::cuda_built()
    }

    /// The engine's device for this choice. A GPU is opened once per process and shared by
    /// every later call: candle treats two openings of one GPU as two devices whose tensors
    /// cannot meet, so a stage-1 model and its checkpoint must come from the same one.
    pub fn device(self) -> Result<lightpeft_engine::Device> {
        let ordinal = match self {
            DeviceChoice::Cpu => return Ok(lightpeft_engine::Device::Cpu),
            DeviceChoice::Cuda(ordinal) => ordinal,
        };
        if !Self::cuda_built() {
            return Err(Error::Usage(format!(
                "device `{self}`: this lightpeft was built without CUDA; build one with \
                 scripts/cuda-build.sh (cargo feature `cuda`) or use --device cpu"
            )));
        }
        static OPENED: OnceLock<Mutex<HashMap<usize, lightpeft_engine::Device>>> = OnceLock::new();
        let mut opened = OPENED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(device) = opened.get(&ordinal) {
            return Ok(device.clone());
        }
        let device = lightpeft_engine::Device::new_cuda(ordinal).map_err(|e| {
            Error::Usage(format!(
                "device `{self}`: no usable CUDA GPU {ordinal} ({e}); check nvidia-smi, \
                 CUDA_VISIBLE_DEVICES and that libcuda.so.1 and the CUDA 13 libraries are on \
                 the library path"
            ))
        })?;
        opened.insert(ordinal, device.clone());
        Ok(device)
    }
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let name = text.trim().to_ascii_lowercase();
        let choice = match name.as_str() {
            "cpu" => DeviceChoice::Cpu,
            "cuda" | "gpu" => DeviceChoice::Cuda(0),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(ordinal)) => DeviceChoice::Cuda(ordinal),
                _ => {
                    return Err(Error::Usage(format!(
                        "device `{}`: expected one of {}",
                        text.trim(),
                        DeviceChoice::NAMES.join(", ")
                    )));
                }
            },
        };
        Ok(choice)
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

// As the text the flag takes, so a stored or sent setting reads like the command line.
impl Serialize for DeviceChoice {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_in_any_case_and_round_trips() {
        for (text, want) in [
            ("cpu", DeviceChoice::Cpu),
            (" CPU ", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("CUDA:3", DeviceChoice::Cuda(3)),
            ("gpu", DeviceChoice::Cuda(0)),
        ] {
            let choice: DeviceChoice = text.parse().unwrap();
            assert_eq!(choice, want, "{text}");
            assert_eq!(choice.to_string().parse::<DeviceChoice>().unwrap(), choice);
            let json = serde_json::to_string(&choice).unwrap();
            assert_eq!(serde_json::from_str::<DeviceChoice>(&json).unwrap(), choice);
        }
        assert_eq!(DeviceChoice::default().to_string(), "cpu");
        assert_eq!(
            serde_json::to_string(&DeviceChoice::Cuda(1)).unwrap(),
            "\"cuda:1\""
        );
        assert!(DeviceChoice::Cpu.device().unwrap().is_cpu());
    }

    #[test]
    fn unknown_devices_are_refused_with_the_choices() {
        for text in ["tpu", "cuda:", "cuda:x", "cuda:-1", "metal"] {
            let e = text.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(e.contains(text) && e.contains("cuda:N"), "{e}");
        }
        assert!(serde_json::from_str::<DeviceChoice>("\"tpu\"").is_err());
    }

    #[test]
    fn a_gpu_opens_once_or_is_refused_clearly() {
        match DeviceChoice::Cuda(0).device() {
            // A CUDA build on a GPU machine: the device opens, and opens once.
            Ok(device) => {
                assert!(device.is_cuda());
                let again = DeviceChoice::Cuda(0).device().unwrap();
                assert!(device.same_device(&again));
            }
            Err(e) => {
                let e = e.to_string();
                if DeviceChoice::cuda_built() {
                    assert!(e.contains("no usable CUDA GPU 0"), "{e}");
                } else {
                    assert!(
                        e.contains("built without CUDA") && e.contains("cuda-build.sh"),
                        "{e}"
                    );
                }
            }
        }
    }
}
