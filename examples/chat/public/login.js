// The example's login, for development (auth.mode dev: the login is the user name).
//
// Each tab has its own user, kept in sessionStorage, so two tabs of one browser
// can chat as alice and bob. This file attaches that user where the seed's
// Spring application had its HTTP session: to the STOMP CONNECT frame (the
// `login` header) and to the page's AJAX calls (HTTP Basic, which the node's
// extensions check like a CONNECT). It also sets the chat_user cookie, which the
// node reads (auth.cookie) when a request carries neither.
//
// In production the application's login sets an HttpOnly cookie holding a JWT
// (auth.mode jwt, auth.cookie), the browser sends it with the SockJS handshake
// and the AJAX calls, and this file is not needed.
(function () {
  var user = sessionStorage.getItem('chat_user') || '';
  if (!user) {
    window.location.replace('login.html?next=' + encodeURIComponent(window.location.pathname.split('/').pop() || 'index.html'));
    return;
  }
  window.chatUser = user;
  document.cookie = 'chat_user=' + encodeURIComponent(user) + '; path=/; SameSite=Lax';

  document.addEventListener('DOMContentLoaded', function () {
    if (window.Stomp && Stomp.over) {  // stompjs 2.3.3: add the login to connect({}, ...)
      var over = Stomp.over;
      Stomp.over = function (ws) {
        var client = over.call(Stomp, ws);
        var connect = client.connect;
        client.connect = function (headers) {
          var args = Array.prototype.slice.call(arguments);
          if (headers && typeof headers === 'object') args[0] = Object.assign({ login: user }, headers);
          return connect.apply(client, args);
        };
        return client;
      };
    }
    if (window.jQuery) {  // the page's $.ajax calls speak for this tab's user
      var basic = 'Basic ' + btoa(unescape(encodeURIComponent(user + ':')));
      jQuery.ajaxSetup({ headers: { Authorization: basic } });
    }
    var bar = document.createElement('div');
    bar.id = 'whoami';
    bar.innerHTML = 'Logged in as <b></b> &middot; <a href="login.html?logout=1">log out</a>';
    bar.querySelector('b').textContent = user;
    document.body.insertBefore(bar, document.body.firstChild);
  });
})();
