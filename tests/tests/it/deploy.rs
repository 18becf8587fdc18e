//! The deployment files (docker-compose.yml, deploy/kubernetes/*.yaml, Dockerfile) cannot be
//! run here; this checks what can be checked: the YAML parses, every environment variable
//! they set is one the binaries read and holds a value the configuration accepts, and every
//! command they run is one of the binaries.

use std::{collections::BTreeMap, path::Path};

use nexus_shared::{Config, config::VARIABLES};
use yaml_rust2::{Yaml, YamlLoader};

const BINARIES: [&str; 4] = ["nexus", "nexus-api", "nexus-scheduler", "nexus-worker"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

fn load(path: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"))
}

/// Resolves YAML merge keys (`<<: *anchor`), which the loader leaves as ordinary keys.
fn merged(yaml: &Yaml) -> Yaml {
    match yaml {
        Yaml::Hash(hash) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            if let Some(base) = hash.get(&Yaml::String("<<".to_owned()))
                && let Yaml::Hash(base) = merged(base)
            {
                out.extend(base);
            }
            for (key, value) in hash {
                if key.as_str() != Some("<<") {
                    out.insert(key.clone(), merged(value));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(items) => Yaml::Array(items.iter().map(merged).collect()),
        other => other.clone(),
    }
}

fn string_map(yaml: &Yaml) -> BTreeMap<String, String> {
    yaml.as_hash()
        .map(|hash| {
            hash.iter()
                .filter_map(|(k, v)| {
                    let value = v
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| v.as_i64().map(|n| n.to_string()))?;
                    Some((k.as_str()?.to_owned(), value))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Stands in a valid value for placeholders: `${VAR:?…}` / `${VAR:-}` in compose, `REPLACE…`
/// in the example Secret.
fn resolve(name: &str, value: &str) -> String {
    if !value.starts_with("${") && !value.starts_with("REPLACE") {
        return value.to_owned();
    }
    match name {
        "NEXUS_SECRET_KEY" => nexus_shared::crypto::SecretKey::generate().to_base64(),
        "NEXUS_BOOTSTRAP_BOARD_TOKEN" => nexus_shared::crypto::SecretKey::generate().to_base64(),
        _ => String::new(),
    }
}

fn assert_valid_configuration(source: &str, env: &BTreeMap<String, String>) {
    for name in env.keys() {
        assert!(
            VARIABLES.contains(&name.as_str()),
            "{source} sets {name}, which no binary reads"
        );
    }
    let resolved: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.clone(), resolve(k, v)))
        .collect();
    let config = Config::from_lookup(|name| resolved.get(name).cloned());
    let config = config.unwrap_or_else(|e| panic!("{source}: {e}"));
    assert_eq!(
        config.listen.port(),
        8080,
        "{source} listens where its probes and ports point"
    );
}

#[test]
fn docker_compose_runs_the_binaries_with_variables_they_read() {
    let docs = load("docker-compose.yml");
    let compose = merged(&docs[0]);
    let services = compose["services"].as_hash().expect("services");
    let mut roles = Vec::new();
    for (name, service) in services {
        let name = name.as_str().expect("name");
        if matches!(name, "postgres" | "redis" | "lb") {
            continue;
        }
        let command = service["command"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has a command"));
        assert!(
            BINARIES.contains(&command),
            "{name} runs {command}, not a Nexus binary"
        );
        roles.push(command.to_owned());
        let env = string_map(&service["environment"]);
        assert_eq!(
            env.contains_key("NEXUS_BOOTSTRAP_BOARD_TOKEN"),
            command == "nexus-api",
            "{name}: the bootstrap token is the API's alone"
        );
        assert!(
            env.values().all(|v| !v.contains(":nexus@")),
            "{name}: no password written into the file"
        );
        assert_valid_configuration(name, &env);
        assert!(
            service["healthcheck"]["test"].as_vec().is_some(),
            "{name} has a health check"
        );
    }
    roles.sort();
    assert_eq!(
        roles,
        [
            "nexus-api",
            "nexus-api",
            "nexus-scheduler",
            "nexus-scheduler",
            "nexus-worker",
            "nexus-worker"
        ]
    );
    let redis: Vec<&str> = services[&Yaml::String("redis".to_owned())]["command"]
        .as_vec()
        .expect("redis command")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        redis.windows(2).any(|w| w == ["--appendonly", "yes"]),
        "Redis keeps its data: {redis:?}"
    );
    assert!(redis.contains(&"--requirepass"), "Redis has a password");
    let postgres = string_map(&services[&Yaml::String("postgres".to_owned())]["environment"]);
    assert!(
        postgres["POSTGRES_PASSWORD"].starts_with("${"),
        "no hard-coded password"
    );
    let nginx =
        std::fs::read_to_string(root().join("deploy/compose/nginx.conf")).expect("nginx.conf");
    assert!(nginx.contains("api-1:8080") && nginx.contains("api-2:8080"));
}

#[test]
fn kubernetes_manifests_run_the_binaries_with_variables_they_read() {
    // Every ConfigMap and Secret by name, with the variables it holds.
    let mut sources: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for doc in load("deploy/kubernetes/config.yaml")
        .iter()
        .chain(&load("deploy/kubernetes/secret.example.yaml"))
    {
        let name = doc["metadata"]["name"].as_str().expect("name").to_owned();
        let vars = sources.entry(name).or_default();
        vars.extend(string_map(&doc["data"]));
        vars.extend(string_map(&doc["stringData"]));
    }
    // A placeholder left in place stops the process.
    let placeholder = &sources["nexus-bootstrap"]["NEXUS_BOOTSTRAP_BOARD_TOKEN"];
    assert!(
        Config::from_lookup(
            |name| (name == "NEXUS_BOOTSTRAP_BOARD_TOKEN").then(|| placeholder.clone())
        )
        .is_err(),
        "the example bootstrap token is refused"
    );
    let mut kinds = Vec::new();
    for file in ["api.yaml", "scheduler.yaml", "worker.yaml"] {
        for doc in load(&format!("deploy/kubernetes/{file}")) {
            let kind = doc["kind"].as_str().expect("kind").to_owned();
            kinds.push(format!("{file}:{kind}"));
            if kind != "Deployment" {
                continue;
            }
            let spec = &doc["spec"]["template"]["spec"];
            assert_eq!(
                spec["automountServiceAccountToken"].as_bool(),
                Some(false),
                "{file}"
            );
            assert_eq!(
                spec["securityContext"]["seccompProfile"]["type"].as_str(),
                Some("RuntimeDefault"),
                "{file}"
            );
            for container in spec["containers"].as_vec().expect("containers") {
                let drop: Vec<&str> = container["securityContext"]["capabilities"]["drop"]
                    .as_vec()
                    .map(|v| v.iter().filter_map(Yaml::as_str).collect())
                    .unwrap_or_default();
                assert_eq!(drop, ["ALL"], "{file}: capabilities dropped");
                let command = container["command"][0].as_str().expect("command");
                assert!(BINARIES.contains(&command), "{file} runs {command}");
                let mut env = BTreeMap::new();
                for source in container["envFrom"].as_vec().expect("envFrom") {
                    let referenced = source["configMapRef"]["name"]
                        .as_str()
                        .or(source["secretRef"]["name"].as_str())
                        .expect("a reference");
                    let vars = sources
                        .get(referenced)
                        .unwrap_or_else(|| panic!("{file}: unknown envFrom {referenced}"));
                    assert!(
                        referenced != "nexus-bootstrap" || file == "api.yaml",
                        "{file}: the bootstrap token is the API's alone"
                    );
                    env.extend(vars.clone());
                }
                for var in container["env"]
                    .as_vec()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    env.insert(
                        var["name"].as_str().expect("name").to_owned(),
                        var["value"].as_str().unwrap_or_default().to_owned(),
                    );
                }
                assert_eq!(
                    env.contains_key("NEXUS_BOOTSTRAP_BOARD_TOKEN"),
                    file == "api.yaml",
                    "{file}"
                );
                assert_valid_configuration(file, &env);
                assert_eq!(container["ports"][0]["containerPort"].as_i64(), Some(8080));
                assert_eq!(
                    container["readinessProbe"]["httpGet"]["path"].as_str(),
                    Some("/readyz")
                );
                assert_eq!(
                    container["livenessProbe"]["httpGet"]["path"].as_str(),
                    Some("/healthz")
                );
                assert!(
                    container["resources"]["limits"]["memory"]
                        .as_str()
                        .is_some(),
                    "{file}: resources"
                );
            }
        }
    }
    for expected in [
        "api.yaml:Deployment",
        "api.yaml:Service",
        "api.yaml:HorizontalPodAutoscaler",
        "api.yaml:PodDisruptionBudget",
        "scheduler.yaml:Deployment",
        "scheduler.yaml:PodDisruptionBudget",
        "worker.yaml:Deployment",
        "worker.yaml:HorizontalPodAutoscaler",
        "worker.yaml:PodDisruptionBudget",
    ] {
        assert!(kinds.iter().any(|k| k == expected), "missing {expected}");
    }
    let policies = load("deploy/kubernetes/network-policy.yaml");
    assert!(
        policies
            .iter()
            .all(|p| p["kind"].as_str() == Some("NetworkPolicy")),
        "network-policy.yaml holds NetworkPolicies"
    );
    assert_eq!(
        policies[0]["spec"]["policyTypes"].as_vec().map(Vec::len),
        Some(2),
        "ingress and egress are both restricted"
    );
}

#[test]
fn the_image_builds_every_binary_and_runs_as_a_non_root_user() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    for binary in BINARIES {
        assert!(
            dockerfile.contains(&format!("--bin {binary} "))
                || dockerfile.contains(&format!("--bin {binary}\n")),
            "{binary} is not built"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "{binary} is not copied"
        );
    }
    assert!(dockerfile.contains("USER 10001"));
    assert!(dockerfile.contains("SQLX_OFFLINE=true"));
    for (binary, main) in [
        ("nexus", "src/main.rs"),
        ("nexus-api", "api/src/main.rs"),
        ("nexus-scheduler", "scheduler/src/main.rs"),
        ("nexus-worker", "worker/src/main.rs"),
    ] {
        assert!(root().join(main).exists(), "{binary} has no {main}");
    }
}
