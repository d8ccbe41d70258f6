use super::*;

#[test]
fn durations_parse_with_units_and_refuse_nonsense() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86400)));
    for bad in ["", "10", "s", "1.5h", "-1s", "10 years"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn sizes_parse_with_binary_units() {
    assert_eq!(parse_size("64m"), Ok(64 << 20));
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert!(parse_size("1.5g").is_err() && parse_size("10 tb").is_err());
}

#[test]
fn mfa_is_required_of_admins_and_officers_unless_configured_otherwise() {
    use tether_domain::auth::Role;
    let c = RawConfig::default().validate("/tmp".into()).unwrap();
    assert_eq!(c.mfa_required_roles, vec![Role::Admin, Role::SecurityOfficer]);
    let c = RawConfig { mfa_required_roles: Some("admin, developer".into()), ..RawConfig::default() };
    assert_eq!(c.validate("/tmp".into()).unwrap().mfa_required_roles, vec![Role::Admin, Role::Developer]);
    let none = RawConfig { mfa_required_roles: Some(String::new()), ..RawConfig::default() };
    assert!(none.validate("/tmp".into()).unwrap().mfa_required_roles.is_empty());
    let bad = RawConfig { mfa_required_roles: Some("admin,root".into()), ..RawConfig::default() };
    assert!(matches!(bad.validate("/tmp".into()), Err(ConfigError::Invalid { key: "mfa_required_roles", .. })));
}

fn sso(extra: &str) -> Result<Config, ConfigError> {
    let text = format!(
        "[sso]\nissuer = \"https://idp.site.lan/realms/site\"\nclient_id = \"tether\"\n\
         client_secret_file = \"/etc/tether/oidc\"\nca_file = \"/etc/tether/idp-ca.pem\"\n{extra}"
    );
    let raw: RawConfig =
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: "t".into(), message: e.to_string() })?;
    raw.validate("/tmp".into())
}

#[test]
fn single_sign_on_maps_groups_in_order_and_never_grants_the_security_officer_role() {
    let ok = sso("console_url = \"https://tether.site.lan:8443/\"\n\
         [[sso.role]]\ngroup = \"ops\"\nrole = \"admin\"\n[[sso.role]]\ngroup = \"dev\"\nrole = \"developer\"\n")
    .unwrap()
    .sso
    .unwrap();
    assert_eq!(ok.redirect_uri, "https://tether.site.lan:8443/api/v1/auth/sso/callback");
    assert_eq!(
        ok.roles,
        vec![("ops".into(), tether_domain::auth::Role::Admin), ("dev".into(), tether_domain::auth::Role::Developer)]
    );
    assert_eq!((ok.scopes.as_str(), ok.groups_claim.as_str()), ("openid profile", "groups"));
    let refused = |extra: &str| match sso(extra) {
        Err(ConfigError::Invalid { key, message }) => format!("{key}: {message}"),
        other => panic!("accepted: {other:?}"),
    };
    let url = "console_url = \"https://t:8443\"\n";
    assert!(
        refused(&format!("{url}[[sso.role]]\ngroup = \"so\"\nrole = \"security_officer\"\n"))
            .contains("local accounts")
    );
    assert!(refused(&format!("{url}[[sso.role]]\ngroup = \"w\"\nrole = \"worker\"\n")).contains("workers"));
    assert!(refused(url).starts_with("sso.role"));
    assert!(
        refused("console_url = \"http://t:8443\"\n[[sso.role]]\ngroup = \"a\"\nrole = \"viewer\"\n").contains("https")
    );
    assert!(refused("[[sso.role]]\ngroup = \"a\"\nrole = \"viewer\"\n").starts_with("sso.console_url"));
}

#[test]
fn unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, "lisen = \"0.0.0.0:1\"\n").unwrap();
    assert!(matches!(RawConfig::from_file(&path, true), Err(ConfigError::Parse { .. })));
}

#[test]
fn env_overrides_the_file_and_bad_values_name_their_key() {
    let mut raw = RawConfig { lease: Some("10s".into()), ..RawConfig::default() };
    raw.apply_env(|k| (k == "TETHER_LEASE").then(|| "20s".to_string())).unwrap();
    let c = raw.clone().validate("/tmp".into()).unwrap();
    assert_eq!(c.broker.lease, Duration::from_secs(20));
    let mut raw = RawConfig::default();
    let bad = raw.apply_env(|k| (k == "TETHER_MAX_CONNECTIONS").then(|| "many".to_string()));
    assert!(matches!(bad, Err(ConfigError::Env { var: "TETHER_MAX_CONNECTIONS", .. })));
    let bad = RawConfig { request_timeout: Some("5s".into()), ..RawConfig::default() };
    match bad.validate("/tmp".into()) {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "request_timeout"),
        other => panic!("expected request_timeout error, got {other:?}"),
    }
}

#[test]
fn every_config_file_the_repo_ships_parses_and_validates() {
    let shipped = [Path::new(env!("CARGO_MANIFEST_DIR")).join("../tether/tether.example.toml")];
    for path in shipped {
        let raw = RawConfig::from_file(&path, true).unwrap();
        raw.validate("/tmp".into()).unwrap();
    }
}

#[test]
fn cors_origins_are_exact_origins_never_wildcards() {
    let with = |origins: &[&str]| {
        let raw = RawConfig {
            cors_allowed_origins: Some(origins.iter().map(|o| (*o).to_owned()).collect()),
            ..RawConfig::default()
        };
        raw.validate("/tmp".into())
    };
    assert!(RawConfig::default().validate("/tmp".into()).unwrap().cors_allowed_origins.is_empty(), "shut by default");
    let c = with(&["https://Tools.Site.lan:8443", "https://notebook.site.lan/"]).unwrap();
    assert_eq!(c.cors_allowed_origins, ["https://tools.site.lan:8443", "https://notebook.site.lan"]);
    for bad in ["*", "https://*.site.lan", "tools.site.lan", "https://tools.site.lan/app", "ftp://x", "null"] {
        assert!(
            matches!(with(&[bad]), Err(ConfigError::Invalid { key: "cors_allowed_origins", .. })),
            "{bad:?} must be refused"
        );
    }
}
