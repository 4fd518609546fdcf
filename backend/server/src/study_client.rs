//! `lightpeft study`: studies through a running server's REST API. The server queues and runs
//! the jobs (on its own worker or on workers sharing its store); this only asks and prints,
//! so a script sees the numbers the dashboard shows.

use std::time::Duration;

use lightpeft_api::rest::{
    CreateStudy, ErrorBody, StudyConfiguration, StudyPlanRatios, StudyPlans, StudyReport,
    StudyRole, StudyState,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// How often `--wait` asks for the report.
const POLL_EVERY: Duration = Duration::from_secs(2);

/// A client of one server's API.
pub struct StudyClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl StudyClient {
    /// A client of the server at `server` (e.g. `http://127.0.0.1:8080`), with the bearer
    /// token when the server asks for one.
    pub fn new(server: &str, token: Option<String>) -> Result<StudyClient> {
        let base = format!("{}/api/v1", server.trim_end_matches('/'));
        // reqwest's rustls takes the process's crypto provider (for an https:// server).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Usage(format!("HTTP client: {e}")))?;
        Ok(StudyClient { base, token, http })
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T> {
        let request = self.authed(request);
        let response = request
            .send()
            .await
            .map_err(|e| Error::Usage(format!("{what}: no answer from {}: {e}", self.base)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::Usage(format!("{what}: {e}")))?;
        if !status.is_success() {
            let why = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(Error::Usage(format!("{what}: {status}: {why}")));
        }
        serde_json::from_slice(&body)
            .map_err(|e| Error::Usage(format!("{what}: unexpected answer: {e}")))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(
            self.http.get(format!("{}{path}", self.base)),
            &format!("GET {path}"),
        )
        .await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(
            self.http.post(format!("{}{path}", self.base)).json(body),
            &format!("POST {path}"),
        )
        .await
    }

    /// Starts a study on experiment `experiment`.
    pub async fn start(&self, experiment: i64, spec: &CreateStudy) -> Result<StudyReport> {
        self.post(&format!("/experiments/{experiment}/studies"), spec)
            .await
    }

    /// The study's report now.
    pub async fn report(&self, id: i64) -> Result<StudyReport> {
        self.get(&format!("/studies/{id}")).await
    }

    /// Cancels the study.
    pub async fn cancel(&self, id: i64) -> Result<StudyReport> {
        self.post(&format!("/studies/{id}/cancel"), &serde_json::json!({}))
            .await
    }

    /// Resumes the study: its cancelled, failed or interrupted jobs are queued again.
    pub async fn resume(&self, id: i64) -> Result<StudyReport> {
        self.post(&format!("/studies/{id}/resume"), &serde_json::json!({}))
            .await
    }

    /// The study's export (`csv` or `json`), as the server wrote it.
    pub async fn export(&self, id: i64, format: &str) -> Result<String> {
        let path = format!("/studies/{id}/export?format={format}");
        let request = self.http.get(format!("{}{path}", self.base));
        let request = self.authed(request);
        let failed = |e: reqwest::Error| Error::Usage(format!("GET {path}: {e}"));
        let response = request.send().await.map_err(failed)?;
        if !response.status().is_success() {
            return Err(Error::Usage(format!("GET {path}: {}", response.status())));
        }
        response.text().await.map_err(failed)
    }

    /// Polls until the study ends, printing a line each time more of its jobs have ended;
    /// returns the last report.
    pub async fn wait(&self, id: i64) -> Result<StudyReport> {
        let mut last = None;
        loop {
            let report = self.report(id).await?;
            let ended = report.jobs.iter().filter(|j| j.status.is_final()).count();
            let line = format!(
                "study {id}: {}, {ended} of {} jobs ended",
                report.state.describe(),
                report.jobs.len()
            );
            if last.as_ref() != Some(&line) {
                eprintln!("{line}");
                last = Some(line);
            }
            if matches!(report.state, StudyState::Finished | StudyState::Cancelled) {
                return Ok(report);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// The plans of `--frontier`, `--quick`, the `--plan`s or of the ratio lists.
pub fn plans_of(
    frontier: bool,
    quick: bool,
    listed: Vec<StudyPlanRatios>,
    heads: Vec<f64>,
    ffn: Vec<f64>,
    modules: Vec<f64>,
    ranks: Vec<f64>,
) -> StudyPlans {
    if frontier {
        StudyPlans::HeadsFfnFrontier
    } else if quick {
        StudyPlans::QuickFrontier
    } else if !listed.is_empty() {
        StudyPlans::List { plans: listed }
    } else {
        StudyPlans::Grid {
            head_ratios: heads,
            ffn_ratios: ffn,
            module_ratios: modules,
            rank_ratios: ranks,
        }
    }
}

/// One `--plan`: four comma-separated ratios, head, FFN, module and rank.
pub fn parse_plan(text: &str) -> std::result::Result<StudyPlanRatios, String> {
    let ratios = text
        .split(',')
        .map(|part| {
            part.trim()
                .parse::<f64>()
                .map_err(|_| format!("`{part}` is not a number"))
        })
        .collect::<std::result::Result<Vec<f64>, String>>()?;
    let [head_ratio, ffn_ratio, module_ratio, rank_ratio] = ratios[..] else {
        return Err(format!(
            "a plan is four ratios, head,FFN,module,rank; got {}",
            ratios.len()
        ));
    };
    Ok(StudyPlanRatios {
        head_ratio,
        ffn_ratio,
        module_ratio,
        rank_ratio,
    })
}

/// The report as a markdown table: every configuration with its unit and its ratio to the
/// all-targets baseline.
pub fn table(report: &StudyReport) -> String {
    let metric = report.metric.as_deref().unwrap_or("score");
    let correlation = lightpeft_api::rest::is_correlation(metric);
    let score = |v: f64| {
        if correlation {
            format!("{v:.3}")
        } else {
            format!("{:.1} %", v * 100.0)
        }
    };
    let mut out = format!(
        "study {} ({}), dev {metric}, mean ± std over seeds; ratios to the all-targets baseline\n\n",
        report.study.id,
        report.state.describe()
    );
    out.push_str("| configuration | seeds | dev score | vs baseline | encoder params (of baseline) | step s (speed-up) | dev pass s (speed-up) | peak MiB | frontier |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for c in &report.configurations {
        out.push_str(&row(c, &score, correlation));
    }
    out
}

fn row(c: &StudyConfiguration, score: &dyn Fn(f64) -> String, correlation: bool) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "–".into());
    let delta = if c.role == StudyRole::BaselineAllTargets {
        "reference".to_string()
    } else {
        opt(c.score_delta.map(|d| {
            if correlation {
                format!("{d:+.3}")
            } else {
                format!("{:+.1} pp", d * 100.0)
            }
        }))
    };
    let with = |v: Option<f64>, up: Option<f64>, unit: &str| {
        opt(v.map(|v| match up {
            Some(u) => format!("{v:.3}{unit} ({u:.2}×)"),
            None => format!("{v:.3}{unit}"),
        }))
    };
    let params = opt(c.encoder_params.map(|p| {
        let of = c
            .encoder_params_ratio
            .map(|r| format!(" ({:.1} %)", r * 100.0))
            .unwrap_or_default();
        format!("{:.2} M{of}", p / 1e6)
    }));
    let frontier: Vec<&str> = c.frontier.iter().map(|a| a.as_str()).collect();
    format!(
        "| {} | {}/{} | {} | {} | {} | {} | {} | {} | {} |\n",
        c.label,
        c.finished,
        c.job_ids.len(),
        opt(c
            .score_mean
            .map(|m| format!("{} ± {}", score(m), score(c.score_std.unwrap_or(0.0))))),
        delta,
        params,
        with(c.step_seconds, c.train_speedup, ""),
        with(c.eval_seconds, c.inference_speedup, ""),
        opt(c.peak_rss_mib.map(|m| format!("{m:.0}"))),
        frontier.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_four_ratios() {
        let plan = parse_plan("0.33, 0.33,0.75,0.5").unwrap();
        assert_eq!(
            [
                plan.head_ratio,
                plan.ffn_ratio,
                plan.module_ratio,
                plan.rank_ratio
            ],
            [0.33, 0.33, 0.75, 0.5]
        );
        assert!(parse_plan("0.5,0.5,0").unwrap_err().contains("four ratios"));
        assert!(parse_plan("0.5,x,0,0").unwrap_err().contains("`x`"));
    }
}
