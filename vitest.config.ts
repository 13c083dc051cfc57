import { configDefaults, defineConfig } from "vitest/config";

// Image tests that only `npm run test:image` runs (WEFT_IMAGE_TESTS=all): the resource measurement.
const imageOnly = process.env["WEFT_IMAGE_TESTS"] === "all" ? [] : ["test/image/resources.test.ts"];

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    exclude: [...configDefaults.exclude, ...imageOnly],
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
