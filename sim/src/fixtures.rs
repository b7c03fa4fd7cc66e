//! The real object shapes (`sim/fixtures/*.json`, copied from the Klutch objects), compiled in.

use serde_json::Value;

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

macro_rules! fixture {
    ($name:ident, $file:literal) => {
        pub fn $name() -> Value {
            parse(include_str!(concat!("../fixtures/", $file)))
        }
    };
}

fixture!(provider_healthy, "provider-healthy.json");
fixture!(provider_unhealthy, "provider-unhealthy.json");
fixture!(providerconfig_healthy, "providerconfig-healthy.json");
fixture!(providerconfig_failing, "providerconfig-failing.json");
fixture!(providerconfig_unchecked, "providerconfig-unchecked.json");
fixture!(
    deployment_anynines_backend_available,
    "deployment-anynines-backend-available.json"
);
fixture!(
    deployment_anynines_backend_unavailable,
    "deployment-anynines-backend-unavailable.json"
);
fixture!(
    deployment_konnector_available,
    "deployment-konnector-available.json"
);
fixture!(
    provider_kubernetes_healthy,
    "provider-kubernetes-healthy.json"
);
fixture!(configuration_healthy, "configuration-healthy.json");
fixture!(clusterbinding_healthy, "clusterbinding-healthy.json");
fixture!(
    clusterbinding_heartbeat_pending,
    "clusterbinding-heartbeat-pending.json"
);
fixture!(serviceinstance_ready, "serviceinstance-ready.json");
fixture!(serviceinstance_failing, "serviceinstance-failing.json");
fixture!(
    provider_v2_awaiting_activation,
    "provider-v2-awaiting-activation.json"
);
fixture!(
    appclusterbinding_konnector_deployed,
    "appclusterbinding-konnector-deployed.json"
);
