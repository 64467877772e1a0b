# A Rack app for Puma, which supports socket activation itself.
#
#   supervisor -l 127.0.0.1:8080 --ready notify --chdir examples/children/puma \
#       -- puma --bind-to-activated-sockets only config.ru
#
# Puma takes the sockets of LISTEN_FDS when LISTEN_PID is its own pid;
# --bind-to-activated-sockets only makes them its binds (no -b needed).
# It sends READY=1 when the sd_notify gem is installed (Debian:
# ruby-sd-notify; newer Puma releases ship their own). TERM is its graceful stop; Puma
# re-raises TERM when done, which the supervisor counts as a clean stop.
generation = ENV.fetch("SUPERVISOR_GENERATION", "0")
run lambda { |_env| [200, { "content-type" => "text/plain" }, ["generation #{generation} pid #{Process.pid}\n"]] }
