//! `pkg.mod` or `pkg.mod:callable`: how uWSGI's `module =`, gunicorn, `rwsgi serve --module` and
//! `rwsgi-worker --module` name a WSGI application by its module. One parser for all of them, so
//! the same words are accepted and refused with the same sentence everywhere.

/// A module name and, when the value names one, its callable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSpec {
    /// The dotted module name (`mysite.wsgi`).
    pub module: String,
    /// The callable after `:`, if given (the caller's default, usually `application`, otherwise).
    pub callable: Option<String>,
}

impl ModuleSpec {
    /// Parses `pkg.mod` or `pkg.mod:callable`. The error is one sentence saying what is
    /// expected; callers put the option's name in front of it.
    pub fn parse(value: &str) -> Result<ModuleSpec, String> {
        let (module, callable) = match value.split_once(':') {
            Some((module, callable)) => (module, Some(callable)),
            None => (value, None),
        };
        if let Some(callable) = callable {
            if callable.ends_with(')') {
                // gunicorn's `pkg.mod:create_app()`: a call, which no configuration here makes.
                return Err(format!(
                    "`{callable}` calls an application factory, which rwsgi does not do; make \
                     the module create the application and name it (pkg.mod:application)"
                ));
            }
            if !is_identifier(callable) {
                return Err(format!(
                    "expected a Python name after ':', got {callable:?}"
                ));
            }
        }
        if !is_module_name(module) {
            return Err(format!(
                "expected a dotted module name such as mysite.wsgi, optionally followed by \
                 :callable, got {value:?}"
            ));
        }
        Ok(ModuleSpec {
            module: module.to_owned(),
            callable: callable.map(str::to_owned),
        })
    }
}

/// A Python dotted module name: identifiers separated by dots.
fn is_module_name(name: &str) -> bool {
    !name.is_empty() && name.split('.').all(is_identifier)
}

/// A Python identifier, ASCII only (enough for module and callable names in configurations).
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(module: &str, callable: Option<&str>) -> ModuleSpec {
        ModuleSpec {
            module: module.into(),
            callable: callable.map(Into::into),
        }
    }

    #[test]
    fn module_and_callable() {
        assert_eq!(
            ModuleSpec::parse("mysite.wsgi"),
            Ok(spec("mysite.wsgi", None))
        );
        assert_eq!(
            ModuleSpec::parse("mysite.wsgi:application"),
            Ok(spec("mysite.wsgi", Some("application")))
        );
        assert_eq!(
            ModuleSpec::parse("_a.b2:_app"),
            Ok(spec("_a.b2", Some("_app")))
        );
    }

    #[test]
    fn refusals_say_what_is_expected() {
        let err = |v: &str| ModuleSpec::parse(v).unwrap_err();
        for bad in [
            "",
            "my-site.wsgi",
            "mysite/wsgi.py",
            "a..b",
            ".a",
            "a.",
            "2a",
            ":app",
        ] {
            assert!(
                err(bad).contains("dotted module name"),
                "{bad}: {}",
                err(bad)
            );
        }
        assert!(err("m:create_app()").contains("application factory"));
        assert!(err("m:create_app(debug=True)").contains("application factory"));
        for bad in ["m:", "m:a.b", "m:1x", "m:a:b"] {
            assert!(
                err(bad).contains("Python name after ':'"),
                "{bad}: {}",
                err(bad)
            );
        }
    }
}
