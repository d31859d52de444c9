// Headless Chromium for the tests (Debian package chromium; .ci/run installs it): one run of it
// on a URL, ended by PID if it has not exited within a minute.
import { spawn } from "node:child_process";
import path from "node:path";

export const chromium = process.env.CHROMIUM || "/usr/bin/chromium";

/** Runs Chromium headless on `url` with `extra` flags and a profile in `dir`; resolves with its
 * exit status and output. */
export function runChromium(dir, extra, url) {
  const flags = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    `--user-data-dir=${path.join(dir, "profile")}`,
  ];
  return new Promise((resolve) => {
    const child = spawn(chromium, [...flags, ...extra, url], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => process.kill(child.pid, "SIGKILL"), 60000);
    child.on("exit", (status) => {
      clearTimeout(timer);
      resolve({ status, out, err });
    });
  });
}
