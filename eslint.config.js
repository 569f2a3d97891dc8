// ESLint for the page's own JavaScript (service/web/js): the recommended rules in browser ES
// modules. Vendored third-party bundles are not ours to lint.
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["service/web/vendor/**", "tests/web/vendor/**", "node_modules/**"] },
  js.configs.recommended,
  {
    files: ["service/web/js/**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: globals.browser,
    },
    rules: {
      eqeqeq: "error",
      "no-unused-vars": ["error", { args: "after-used" }],
      "prefer-const": "error",
      // Prettier wraps code at 100 columns but not long strings or comments: this catches those
      "max-len": ["error", { code: 100, ignoreUrls: true }],
    },
  },
];
