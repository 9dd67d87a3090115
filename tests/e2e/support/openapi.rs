//! A small OpenAPI 3.0 response checker for the conformance test: it resolves `$ref`s and
//! checks status codes, content types, required properties, types, enums, nullability,
//! undocumented properties (`additionalProperties: false`) and array items of real responses against `openapi.yaml`.

use serde_json::Value;

pub struct Spec {
    root: Value,
}

impl Spec {
    pub fn load() -> Spec {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let root: Value = serde_yaml_ng::from_str(&text).expect("openapi.yaml parses");
        Spec { root }
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        let mut cur = v;
        for _ in 0..10 {
            match cur.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    let ptr = r.trim_start_matches('#');
                    cur = self
                        .root
                        .pointer(ptr)
                        .unwrap_or_else(|| panic!("dangling $ref {r}"));
                }
                None => return cur,
            }
        }
        cur
    }

    /// Checks one response of `GET {path_template}`; returns the problems found.
    pub fn check(
        &self,
        path_template: &str,
        status: u16,
        content_type: Option<&str>,
        body: &str,
    ) -> Vec<String> {
        let mut errs = Vec::new();
        let op = &self.root["paths"][path_template]["get"];
        if op.is_null() {
            return vec![format!("no GET {path_template} in the spec")];
        }
        let resp = &op["responses"][status.to_string()];
        if resp.is_null() {
            return vec![format!(
                "status {status} is not documented for {path_template}"
            )];
        }
        let resp = self.resolve(resp);
        let Some(content) = resp.get("content").and_then(Value::as_object) else {
            if !body.is_empty() {
                errs.push(format!("{status} documents no body but one was sent"));
            }
            return errs;
        };
        let media = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let Some(media_obj) = content.get(&media) else {
            return vec![format!(
                "content type `{media}` not documented for {status}"
            )];
        };
        if media.ends_with("json") {
            let v: Value = match serde_json::from_str(body) {
                Ok(v) => v,
                Err(e) => return vec![format!("body is not JSON: {e}")],
            };
            self.check_value(&media_obj["schema"], &v, "$", &mut errs);
        }
        errs
    }

    fn check_value(&self, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if v.is_null() {
            if schema["nullable"].as_bool() != Some(true) && schema.get("type").is_some() {
                errs.push(format!("{at}: null is not allowed"));
            }
            return;
        }
        if let Some(t) = schema["type"].as_str() {
            let ok = match t {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                _ => true,
            };
            if !ok {
                errs.push(format!("{at}: expected {t}, got {v}"));
                return;
            }
        }
        if let Some(en) = schema["enum"].as_array()
            && !en.contains(v)
        {
            errs.push(format!("{at}: {v} not in enum"));
        }
        if let Some(req) = schema["required"].as_array() {
            for r in req.iter().filter_map(Value::as_str) {
                if v.get(r).is_none() {
                    errs.push(format!("{at}: missing required `{r}`"));
                }
            }
        }
        if let (Some(props), Some(obj)) = (schema["properties"].as_object(), v.as_object()) {
            for (k, s) in props {
                if let Some(val) = obj.get(k) {
                    self.check_value(s, val, &format!("{at}.{k}"), errs);
                }
            }
            if schema["additionalProperties"] == Value::Bool(false) {
                for k in obj.keys().filter(|k| !props.contains_key(*k)) {
                    errs.push(format!("{at}: `{k}` is not documented"));
                }
            }
        }
        if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
            for (i, item) in arr.iter().enumerate() {
                self.check_value(items, item, &format!("{at}[{i}]"), errs);
            }
        }
    }
}
