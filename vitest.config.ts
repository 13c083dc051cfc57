import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Network-namespace tests share one kernel: run files one at a time.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // The fuzz targets measure heap growth after a full GC (test/fuzz/lib.ts).
    execArgv: ["--expose-gc"],
    globalSetup: ["test/helpers/global-setup.ts"],
  },
});
