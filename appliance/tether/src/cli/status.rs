//! `tether status`: the running appliance at a glance, over the API
//! (TETHER_URL, TETHER_TOKEN, TETHER_CA_FILE): its state, vault, crypto
//! mode and module, certificate alerts and warnings.

use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::client::ApiClient;

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let api = ApiClient::from_env(TIMEOUT)?;
    let mut status = api.call(Method::GET, "/api/v1/system/status", None, &[]).await?;
    // The alerts themselves are for roles that may read the PKI (not viewers).
    if status["certificate_alerts"].as_u64().unwrap_or(0) > 0
        && let Ok(certs) = api.call(Method::GET, "/api/v1/pki/certificates", None, &[]).await
    {
        status["alerts"] = certs["alerts"].clone();
    }
    if args.json {
        super::print_json(&status)?;
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", describe(&status));
    Ok(ExitCode::SUCCESS)
}

fn describe(s: &Value) -> String {
    let mut out = String::new();
    let mut line = |label: &str, text: String| out.push_str(&format!("{label:<14}{text}\n"));
    let text = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    line("Status", format!("{} ({} workers, {} polls parked)", text(&s["status"]), s["workers"], s["parked_polls"]));
    let vault = &s["vault"];
    line(
        "Vault",
        if vault["sealed"] == true {
            "SEALED: nothing runs until `tether unseal`".into()
        } else {
            format!("unsealed (data key version {})", vault["key_version"])
        },
    );
    let crypto = &s["crypto"];
    let validated = if crypto["validated_module"] == true {
        "a FIPS 140-3 validated module"
    } else {
        "not a validated module: algorithms restricted only"
    };
    line("Crypto mode", text(&crypto["mode"]));
    line("Crypto module", format!("{} ({validated})", text(&crypto["module"])));
    let tests = crypto["self_tests_passed"].as_array().map_or(0, Vec::len);
    if tests > 0 {
        line("Self-tests", format!("{tests} passed at start"));
    }
    let alerts = s["certificate_alerts"].as_u64().unwrap_or(0);
    line("Certificates", if alerts == 0 { "ok".into() } else { format!("{alerts} expiring or overdue") });
    for a in s["alerts"].as_array().into_iter().flatten() {
        let state = if a["expired"] == true { "expired" } else { "expires" };
        out.push_str(&format!(
            "  {} {} {state} {}: {}\n",
            text(&a["certificate"]),
            text(&a["id"]),
            text(&a["not_after"]),
            text(&a["action"])
        ));
    }
    for w in s["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("Warning       {}\n", text(w)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_summary_names_the_mode_the_module_and_whether_it_is_validated() {
        let status = json!({
            "status": "ok", "workers": 2, "parked_polls": 1,
            "vault": {"sealed": false, "key_version": 3},
            "crypto": {"mode": "fips", "module": "ring", "validated_module": false, "self_tests_passed": ["a", "b"]},
            "certificate_alerts": 1,
            "alerts": [{"certificate": "ca", "id": "sha256:ab", "not_after": "2030-01-01T00:00:00.000Z", "expired": false, "action": "plan a CA rotation"}],
            "warnings": ["unseal_key_file: careful"],
        });
        let text = describe(&status);
        for expected in [
            "ok (2 workers, 1 polls parked)",
            "unsealed (data key version 3)",
            "Crypto mode   fips",
            "ring (not a validated module: algorithms restricted only)",
            "2 passed at start",
            "1 expiring or overdue",
            "ca sha256:ab expires 2030-01-01T00:00:00.000Z: plan a CA rotation",
            "Warning       unseal_key_file: careful",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
    }
}
