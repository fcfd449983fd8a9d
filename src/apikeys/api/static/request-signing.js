/*
 * Signs Swagger UI's "Try it out" requests with a requestSigning key, in the browser.
 *
 * Loaded right after swagger-ui-bundle.js and before the page's inline
 * `SwaggerUIBundle({...})` call: it wraps SwaggerUIBundle so the UI it builds gets a
 * requestInterceptor. Just before each request is sent, the interceptor computes
 *
 *   hex(HMAC-SHA256(utf8(secret), key + "\n" + Expires + "\n" + absolute URL + "\n" + body))
 *
 * with WebCrypto over the exact URL and body about to go out, and sets the
 * Convert-Application-ID, Expires and Authorization headers.
 *
 * The key and the secret come from the Authorize dialog. The secret's scheme is declared
 * in the OpenAPI document but listed by no operation, so Swagger UI keeps it in its auth
 * state and never sends it; it is stripped here too in case the document changes. Its box
 * in the dialog is drawn here (SigningSecretAuth) rather than as Swagger UI draws an API key,
 * whose "Name: Convert-Secret, In: header" would read as if the secret were sent.
 *
 * WebCrypto exists only in secure contexts: https, or http://127.0.0.1 / http://localhost.
 */
(function () {
  "use strict";

  var KEY_SCHEME = "requestSigning";
  var SECRET_SCHEME = "requestSigningSecret";
  var SECRET_HEADER = "Convert-Secret";
  var LIFETIME_SECONDS = 300;

  var buildUi = window.SwaggerUIBundle;
  if (typeof buildUi !== "function") {
    console.error("request-signing.js must load after swagger-ui-bundle.js");
    return;
  }

  var ui = null;

  function authorizedValue(scheme) {
    var authorized = ui && ui.authSelectors.authorized();
    var value = authorized && authorized.getIn([scheme, "value"]);
    return value ? String(value) : null;
  }

  function toHex(buffer) {
    return Array.from(new Uint8Array(buffer), function (byte) {
      return byte.toString(16).padStart(2, "0");
    }).join("");
  }

  async function hmacSha256Hex(secret, message) {
    if (!window.isSecureContext || !window.crypto || !window.crypto.subtle) {
      throw new Error(
        "Signing needs WebCrypto, which browsers offer only in a secure context: open this " +
          "page over https, or at http://127.0.0.1 or http://localhost."
      );
    }
    var encoder = new TextEncoder();
    var key = await crypto.subtle.importKey(
      "raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]
    );
    return toHex(await crypto.subtle.sign("HMAC", key, encoder.encode(message)));
  }

  function setHeader(headers, name, value) {
    Object.keys(headers).forEach(function (existing) {
      if (existing.toLowerCase() === name.toLowerCase()) delete headers[existing];
    });
    if (value !== undefined) headers[name] = value;
  }

  function bodyText(request) {
    var body = request.body;
    if (body === undefined || body === null) return "";
    if (typeof body === "string") return body;
    if (body instanceof URLSearchParams) {
      // Sent as this exact string, so what is signed is what goes out.
      request.body = body.toString();
      return request.body;
    }
    throw new Error("Cannot sign a " + Object.prototype.toString.call(body) + " body");
  }

  async function sign(request) {
    if (request.loadSpec) return request;
    request.headers = request.headers || {};
    setHeader(request.headers, SECRET_HEADER);
    var key = authorizedValue(KEY_SCHEME);
    var secret = authorizedValue(SECRET_SCHEME);
    // Without both, another scheme (Bearer) or none is in use: leave the request alone.
    if (!key || !secret) return request;

    var url = new URL(request.url, document.baseURI);
    url.hash = "";
    request.url = url.href;
    var body = bodyText(request);
    var expires = String(Math.floor(Date.now() / 1000) + LIFETIME_SECONDS);
    var signature = await hmacSha256Hex(
      secret, key + "\n" + expires + "\n" + request.url + "\n" + body
    );
    setHeader(request.headers, "Convert-Application-ID", key);
    setHeader(request.headers, "Expires", expires);
    setHeader(request.headers, "Authorization", "Convert-HMAC-SHA256 Signature=" + signature);
    return request;
  }

  // The Authorize dialog's box for the secret: what it is for (the scheme's description), a
  // password field, and no "Name:" or "In:" line, since nothing is sent under any name.
  function signingSecretAuth(React, props) {
    var Markdown = props.getComponent("Markdown", true);
    var value = props.authorized && props.authorized.getIn([props.name, "value"]);
    var errors = props.errSelectors.allErrors().filter(function (error) {
      return error.get("authId") === props.name;
    });
    var AuthError = props.getComponent("authError");
    return React.createElement(
      "div",
      { className: "apikeys-signing-secret" },
      React.createElement(
        "h4", null, React.createElement("code", null, props.name), " (kept in this page)"
      ),
      value ? React.createElement("h6", null, "Authorized") : null,
      React.createElement(Markdown, { source: props.schema.get("description") }),
      React.createElement("label", { htmlFor: "request_signing_secret_value" }, "Secret:"),
      React.createElement(
        "div",
        null,
        value
          ? React.createElement("code", null, " ****** ")
          : React.createElement("input", {
              id: "request_signing_secret_value",
              type: "password",
              autoComplete: "off",
              onChange: function (event) {
                props.onChange({ name: props.name, schema: props.schema, value: event.target.value });
              },
            })
      ),
      errors.valueSeq().map(function (error, index) {
        return React.createElement(AuthError, { error: error, key: index });
      })
    );
  }

  function signingSecretPlugin() {
    return {
      wrapComponents: {
        apiKeyAuth: function (Original, system) {
          return function (props) {
            if (props.name !== SECRET_SCHEME) return system.React.createElement(Original, props);
            return signingSecretAuth(system.React, props);
          };
        },
      },
    };
  }

  window.SwaggerUIBundle = new Proxy(buildUi, {
    // Reads such as SwaggerUIBundle.presets fall through to the original.
    apply: function (target, thisArg, args) {
      var options = Object.assign({}, args[0] || {});
      options.plugins = (options.plugins || []).concat([signingSecretPlugin]);
      var given = options.requestInterceptor;
      options.requestInterceptor = async function (request) {
        if (given) request = (await given(request)) || request;
        return sign(request);
      };
      ui = Reflect.apply(target, thisArg, [options].concat(args.slice(1)));
      return ui;
    },
  });
})();
