// Progressive enhancement only: every page works without this file (and no script is inline).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // A select marked "autosubmit" submits its form when changed (the button stays for keyboards).
  document.querySelectorAll("select.autosubmit").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
});
