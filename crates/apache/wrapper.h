/* The httpd 2.4 API surface mod_rwsgi binds to (see build.rs). */
#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <http_log.h>
#include <http_main.h>
#include <ap_mpm.h>
#include <scoreboard.h>
#include <util_script.h>
#include <util_filter.h>
#include <apr_strings.h>
#include <apr_buckets.h>
#include <apr_tables.h>
#include <apr_thread_proc.h>
#include <apr_portable.h>
#include <unixd.h>
