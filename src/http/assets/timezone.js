// Fills each sign-up form's hidden `timezone` field with the browser's zone, so the digest can
// arrive in the subscriber's own morning. Served from /assets/timezone.js: the pages' Content
// Security Policy allows scripts from the site itself and no inline ones. Without JavaScript
// the field stays empty and the list's zone applies.
document.querySelectorAll('input[name="timezone"]').forEach(function (field) {
  try {
    field.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) {}
});
