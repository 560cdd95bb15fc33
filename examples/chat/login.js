// The example's login: the user name lives in the chat_user cookie, which the
// node reads (auth.mode dev, auth.cookie chat_user) from the SockJS handshake
// and from the /wsTemplate calls. Development only: anyone can pick any name.
// In production the application's login sets an HttpOnly cookie holding a JWT
// (auth.mode jwt, auth.cookie), and this file is not needed.
(function () {
  var match = document.cookie.match(/(?:^|;\s*)chat_user=([^;]*)/);
  var user = match ? decodeURIComponent(match[1]) : '';
  if (!user) {
    window.location.replace('login.html?next=' + encodeURIComponent(window.location.pathname.split('/').pop() || 'index.html'));
    return;
  }
  window.chatUser = user;
  document.addEventListener('DOMContentLoaded', function () {
    var bar = document.createElement('div');
    bar.id = 'whoami';
    bar.innerHTML = 'Logged in as <b></b> &middot; <a href="login.html?logout=1">log out</a>';
    bar.querySelector('b').textContent = user;
    document.body.insertBefore(bar, document.body.firstChild);
  });
})();
