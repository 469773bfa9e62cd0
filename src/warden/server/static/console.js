// The warden console's only script: stop a form being sent twice by a double click.
// Everything works without it; the server checks every form on its own.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.dataset.sent === "1") {
    event.preventDefault();
    return;
  }
  form.dataset.sent = "1";
});
